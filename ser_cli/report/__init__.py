"""`ser compare`: evaluation folders loaded, grouped by configuration, summarised as tables, JSON and Markdown."""
