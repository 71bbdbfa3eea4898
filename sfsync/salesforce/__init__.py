"""Talking to Salesforce: sfsync's own OAuth flows and a REST session that re-authenticates."""
