DROP TRIGGER collections_exposure_is_recorded_once ON collections;
DROP FUNCTION collections_exposure_is_recorded_once();
ALTER TABLE collections
    DROP COLUMN hes_volume_ml,
    DROP COLUMN product_red_cell_ml,
    DROP COLUMN red_cell_loss_ml;
