-- Where a checkpoint stands (compared major, then minor): a write whose
-- position is behind the stored one is refused, so a checkpoint never moves
-- backwards. Null: a checkpoint without an order (always written).
ALTER TABLE tributary_checkpoints ADD COLUMN position_major INTEGER;
ALTER TABLE tributary_checkpoints ADD COLUMN position_minor INTEGER;
