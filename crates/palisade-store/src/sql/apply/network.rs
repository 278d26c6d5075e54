//! Applying network policy: model MUD policies, sites, placements, edges and their status.

use sqlx::AnyConnection;

use super::misrouted;
use crate::sql::writer::conflict;
use crate::{Change, StoreError};

/// Applies one of this family's changes inside the open transaction.
pub(super) async fn apply(
    c: &mut AnyConnection,
    change: &Change,
) -> Result<Option<i64>, StoreError> {
    match change {
        Change::SetModelPolicy(p) => {
            sqlx::query(
                "INSERT INTO model_policies (model_id, mud_url, mud, policy, signed_by, open_override, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT(model_id) DO UPDATE SET mud_url = $2, mud = $3, policy = $4,
                    signed_by = $5, open_override = $6, updated_ms = $7",
            )
            .bind(p.model.as_str())
            .bind(&p.mud_url)
            .bind(&p.mud)
            .bind(&p.policy)
            .bind(&p.signed_by)
            .bind(i64::from(p.open_override))
            .bind(p.updated_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::UpsertSite(s) => {
            sqlx::query(
                "INSERT INTO sites (name, spec, created_ms, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(name) DO UPDATE SET spec = $2, updated_ms = $4",
            )
            .bind(s.name.as_str())
            .bind(&s.spec)
            .bind(s.created_ms)
            .bind(s.updated_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::SetPlacement(p) => {
            sqlx::query(
                "INSERT INTO device_placements (device_id, site, segment, address, overrides, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT(device_id) DO UPDATE SET site = $2, segment = $3, address = $4,
                    overrides = $5, updated_ms = $6",
            )
            .bind(p.device.as_str())
            .bind(p.site.as_str())
            .bind(&p.segment)
            .bind(&p.address)
            .bind(&p.overrides)
            .bind(p.updated_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::SetEdge {
            device,
            site,
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO site_edges (device_id, site, applied_version, status, updated_ms)
                 VALUES ($1, $2, 0, '{}', $3)
                 ON CONFLICT(device_id) DO UPDATE SET site = $2, updated_ms = $3",
            )
            .bind(device.as_str())
            .bind(site.as_str())
            .bind(at_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::RecordEdgeStatus {
            device,
            applied_version,
            status,
            at_ms,
        } => {
            let v = i64::try_from(*applied_version)
                .map_err(|_| conflict("edge", device.as_str(), "version out of range"))?;
            sqlx::query(
                "UPDATE site_edges SET applied_version = $1, status = $2, updated_ms = $3 WHERE device_id = $4",
            )
            .bind(v)
            .bind(status)
            .bind(at_ms)
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::RecordUnmanaged(sightings) => {
            for s in sightings {
                sqlx::query(
                    "INSERT INTO unmanaged_hosts AS h
                        (site, address, mac, hostname, sources, first_ms, last_ms, bytes)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
                     ON CONFLICT(site, address) DO UPDATE SET
                        mac = COALESCE($3, h.mac),
                        hostname = COALESCE($4, h.hostname),
                        sources = CASE WHEN instr(',' || h.sources || ',', ',' || $5 || ',') > 0
                                       THEN h.sources ELSE h.sources || ',' || $5 END,
                        first_ms = CASE WHEN h.first_ms < $6 THEN h.first_ms ELSE $6 END,
                        last_ms = CASE WHEN h.last_ms > $6 THEN h.last_ms ELSE $6 END,
                        bytes = h.bytes + $7",
                )
                .bind(s.site.as_str())
                .bind(&s.address)
                .bind(s.mac.as_deref())
                .bind(s.hostname.as_deref())
                .bind(&s.source)
                .bind(s.at_ms)
                .bind(i64::try_from(s.bytes).unwrap_or(i64::MAX))
                .execute(&mut *c)
                .await?;
            }
        }
        Change::SetUnmanagedState {
            site,
            address,
            state,
            device,
            actor,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE unmanaged_hosts SET state = $1, device_id = $2, decided_by = $3, decided_ms = $4
                 WHERE site = $5 AND address = $6",
            )
            .bind(state.as_str())
            .bind(device.as_ref().map(|d| d.as_str().to_owned()))
            .bind(actor)
            .bind(at_ms)
            .bind(site.as_str())
            .bind(address)
            .execute(&mut *c)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: "unmanaged host",
                    key: format!("{site} {address}"),
                });
            }
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
