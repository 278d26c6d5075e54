-- Support lifecycle per model: the date support ends, and how many days after
-- a security release every device must be running it.
ALTER TABLE models ADD COLUMN support_until_ms INTEGER;
ALTER TABLE models ADD COLUMN security_update_days INTEGER;
