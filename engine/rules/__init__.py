"""Rules: the config and rule files, conditions, templates, the index, loading, test cases."""
