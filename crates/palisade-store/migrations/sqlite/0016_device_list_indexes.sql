-- The console's device list at fleet scale: each common filter with each sort
-- reads an index in order instead of sorting the fleet (measured by
-- `cargo bench -p palisade-server --bench console`).
DROP INDEX IF EXISTS devices_by_last_seen;
CREATE INDEX devices_by_last_seen ON devices(last_seen_ms, id);
CREATE INDEX devices_by_firmware ON devices(reported_firmware, id);
CREATE INDEX devices_by_model_id ON devices(model_id, id);
CREATE INDEX devices_by_model_state_seen ON devices(model_id, state, last_seen_ms, id);
CREATE INDEX device_placements_by_site_device ON device_placements(site, device_id);
