"""Private helpers of the models stage; not a public API."""
