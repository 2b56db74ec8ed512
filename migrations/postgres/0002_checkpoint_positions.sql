-- Where a checkpoint stands (compared major, then minor): a write whose
-- position is behind the stored one is refused, so a checkpoint never moves
-- backwards. Null: a checkpoint without an order (always written).
ALTER TABLE tributary_checkpoints ADD COLUMN IF NOT EXISTS position_major bigint;
ALTER TABLE tributary_checkpoints ADD COLUMN IF NOT EXISTS position_minor bigint;
