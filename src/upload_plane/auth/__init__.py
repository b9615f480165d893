"""Accounts: users, password hashing, access tokens, the authentication middleware."""
