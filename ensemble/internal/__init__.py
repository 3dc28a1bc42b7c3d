"""Private helpers of the ensemble stage (not a public API)."""
