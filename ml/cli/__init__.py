"""`python -m ml ...`: the command line."""
