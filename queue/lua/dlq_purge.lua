-- dlq_purge. ARGV: keep (negative: no count cap) older_than_ms (0: none).
-- Removes up to 1000 entries per call; returns how many.
return trim_dlq(now_ms(), num(ARGV[1]), num(ARGV[2]))
