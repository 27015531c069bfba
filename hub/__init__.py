"""What every HTTP endpoint in the Hugging Face Hub's shape shares, below the domains that answer them:
the error shape the client turns into its exceptions, the routes that name a repo, and the
per-caller rate limit whose headers the client reads."""
