-- Donor exposure (issue 13): what a collection took from the donor and what it gave.
--   red_cell_loss_ml     red cells lost other than in the product (an aborted run's), at its end
--   product_red_cell_ml  the red cells of the unit made from it, when the unit is created
--   hes_volume_ml        hydroxyethyl starch the donor received, at its end
ALTER TABLE collections
    ADD COLUMN red_cell_loss_ml INTEGER CHECK (red_cell_loss_ml BETWEEN 0 AND 1000),
    ADD COLUMN product_red_cell_ml DOUBLE PRECISION
        CHECK (product_red_cell_ml >= 0 AND product_red_cell_ml <= 500),
    ADD COLUMN hes_volume_ml INTEGER CHECK (hes_volume_ml BETWEEN 0 AND 5000);

-- Units made before this release: their red cells were taken from the donor too.
UPDATE collections c
    SET product_red_cell_ml = u.red_cell_volume_ml
    FROM units u
    WHERE u.collection_id = c.id AND u.red_cell_volume_ml IS NOT NULL;

-- Once recorded these are facts: never changed, never cleared.
CREATE FUNCTION collections_exposure_is_recorded_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.red_cell_loss_ml IS NOT NULL AND NEW.red_cell_loss_ml IS DISTINCT FROM OLD.red_cell_loss_ml)
        OR (OLD.product_red_cell_ml IS NOT NULL AND NEW.product_red_cell_ml IS DISTINCT FROM OLD.product_red_cell_ml)
        OR (OLD.hes_volume_ml IS NOT NULL AND NEW.hes_volume_ml IS DISTINCT FROM OLD.hes_volume_ml) THEN
        RAISE EXCEPTION 'a collection''s recorded red-cell loss and HES volume are never changed';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER collections_exposure_is_recorded_once BEFORE UPDATE ON collections
    FOR EACH ROW EXECUTE FUNCTION collections_exposure_is_recorded_once();
