"""What the GitHub Action says to GitHub: the REST client for comments and pull requests."""
