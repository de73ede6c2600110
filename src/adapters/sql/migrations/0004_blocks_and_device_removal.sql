-- Devices a user can see and unlink, and blocks between users (AccountService).

-- When a device last had a stream open: the retention job removes devices not seen for RETENTION_DAYS. Devices that
-- exist at the upgrade count as seen then, so none is removed before it had the whole period to show up.
ALTER TABLE devices ADD COLUMN last_seen_at timestamptz;
UPDATE devices SET last_seen_at = now();
ALTER TABLE devices ALTER COLUMN last_seen_at SET NOT NULL;
CREATE INDEX devices_last_seen_at_idx ON devices (last_seen_at);

-- What a removed device's (user, device name) pair keeps once its devices row is gone.
CREATE TABLE device_removals (
  user_id           text COLLATE "C" NOT NULL,
  device_name       text COLLATE "C" NOT NULL,
  -- Set when its user removed it: tokens issued before are refused, for good.
  tokens_not_before timestamptz,
  -- Set when the retention job removed it: the resync cause of the device when it comes back (taken then).
  resync_cause      text CHECK (resync_cause IN ('retention')),
  PRIMARY KEY (user_id, device_name)
);

-- Who blocked whom. Sends and chat changes look up the blockers of the acting user.
CREATE TABLE blocks (
  blocker_user_id text COLLATE "C" NOT NULL,
  blocked_user_id text COLLATE "C" NOT NULL,
  blocked_at      timestamptz NOT NULL,
  PRIMARY KEY (blocker_user_id, blocked_user_id)
);
CREATE INDEX blocks_blocked_idx ON blocks (blocked_user_id, blocker_user_id);
