"""Private helpers of the scoring stage (Ray session and resource planning, hashing)."""
