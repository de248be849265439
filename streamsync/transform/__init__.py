"""Stream record to Elasticsearch action."""
