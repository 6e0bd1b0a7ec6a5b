"""Web scraping service: crawls a tenant's website into its knowledge."""
