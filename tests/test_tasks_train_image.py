"""The tutorial's training step: data, argument checks (the full run is in the pipeline test)."""

import numpy as np
import pytest

from batchpredict.errors import UserError
from batchpredict.tasks.train_image import digit_images, run_train_image_classifier


class Art:
    def __init__(self, path):
        self.path = self.uri = str(path)
        self.metadata = {}


def test_digit_images_are_32x32_rgb_uint8_with_ten_classes():
    images, labels = digit_images()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    assert (images[..., 0] == images[..., 2]).all()  # grey in three channels
    assert images.max() == 255 and sorted(set(labels.tolist())) == list(range(10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"epochs": 0}, "epochs must be at least 1; got 0"), ({"test_fraction": 1.0}, "got 1.0")],
)
def test_bad_arguments_name_the_value(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        run_train_image_classifier(
            model=Art(tmp_path / "m"),
            test_instances=Art(tmp_path / "t"),
            ground_truth=Art(tmp_path / "g"),
            **kwargs,
        )
