-- Donor exposure (issue 13): what a collection took from the donor and what it gave.
--   red_cell_loss_ml     red cells lost other than in the product (an aborted run's), at its end
--   product_red_cell_ml  the red cells of the unit made from it, when the unit is created
--   hes_volume_ml        hydroxyethyl starch the donor received, at its end
ALTER TABLE collections ADD COLUMN red_cell_loss_ml INTEGER CHECK (red_cell_loss_ml BETWEEN 0 AND 1000);
ALTER TABLE collections ADD COLUMN product_red_cell_ml DOUBLE
    CHECK (product_red_cell_ml >= 0 AND product_red_cell_ml <= 500);
ALTER TABLE collections ADD COLUMN hes_volume_ml INTEGER CHECK (hes_volume_ml BETWEEN 0 AND 5000);

-- Units made before this release: their red cells were taken from the donor too.
UPDATE collections
    SET product_red_cell_ml = (SELECT u.red_cell_volume_ml FROM units u WHERE u.collection_id = collections.id)
    WHERE EXISTS (SELECT 1 FROM units u WHERE u.collection_id = collections.id AND u.red_cell_volume_ml IS NOT NULL);

-- Once recorded these are facts: never changed, never cleared.
CREATE TRIGGER collections_exposure_is_recorded_once
BEFORE UPDATE OF red_cell_loss_ml, product_red_cell_ml, hes_volume_ml ON collections
WHEN (OLD.red_cell_loss_ml IS NOT NULL AND NEW.red_cell_loss_ml IS NOT OLD.red_cell_loss_ml)
  OR (OLD.product_red_cell_ml IS NOT NULL AND NEW.product_red_cell_ml IS NOT OLD.product_red_cell_ml)
  OR (OLD.hes_volume_ml IS NOT NULL AND NEW.hes_volume_ml IS NOT OLD.hes_volume_ml)
BEGIN SELECT RAISE(ABORT, 'a collection''s recorded red-cell loss and HES volume are never changed'); END;
