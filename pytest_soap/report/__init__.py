"""Reports of a session's verdicts: the terminal section and the JSON file."""
