-- What devices last reported over the gateway, flushed from memory periodically.
ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE devices ADD COLUMN reported_firmware TEXT;
