"""The cacher: consumes cache jobs and commits verified content to storage."""
