"""The toolkit's jobs as plain Python functions; each CLI command calls exactly one of them."""
