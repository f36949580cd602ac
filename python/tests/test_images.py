"""Pictures from Python: a LoggerDestination that defines log_image gets image_visualizer's grids of what the model
is fed, a callback logs its own through logger.log_image, and without a destination that keeps pictures the
visualizer is refused before training."""
import pytest
import torch

import tessera
from conftest import tiny_components


class Pictures(tessera.LoggerDestination):
    def __init__(self):
        super().__init__()
        self.got = []

    def log_image(self, tag, image, timestamp):
        self.got.append((tag, image.clone(), timestamp.batch))


class FirstInputs(tessera.Callback):
    """The input of the first forward of every training batch."""

    def __init__(self):
        super().__init__()
        self.first = {}

    def before_forward(self, state, logger):
        self.first.setdefault(state.timestamp.batch, state.batch["input"].clone())


def grid_of(images):
    """image_visualizer's grid, by hand: each image scaled by its own range, in rows of ceil(sqrt(n)), 2-pixel
    black borders; [height, width, channels] uint8."""
    n, c, h, w = images.shape
    cols = int(torch.ceil(torch.sqrt(torch.tensor(float(n)))))
    rows = (n + cols - 1) // cols
    grid = torch.zeros(c, rows * (h + 2) + 2, cols * (w + 2) + 2, dtype=torch.uint8)
    for i, image in enumerate(images.double()):
        low, high = image.min(), image.max()
        scaled = ((image - low) / (high - low) * 255).round().clamp(0, 255).to(torch.uint8)
        y, x = 2 + (i // cols) * (h + 2), 2 + (i % cols) * (w + 2)
        grid[:, y:y + h, x:x + w] = scaled
    return grid.permute(1, 2, 0).contiguous()


def test_a_python_destination_that_defines_log_image_gets_the_grids_of_what_the_model_is_fed(tmp_path):
    pictures, inputs = Pictures(), FirstInputs()
    trainer = tessera.Trainer(**tiny_components(max_duration="2ep"), run_dir=str(tmp_path),
                              callbacks=[inputs, {"image_visualizer": {"interval": 3, "num_images": 3}}, pictures])
    trainer.fit()
    assert [(tag, batch) for tag, _, batch in pictures.got] == [("images/train", 0), ("images/train", 3),
                                                                ("images/train", 6)]  # 8 batches of 16
    for _, image, batch in pictures.got:
        assert image.dtype == torch.uint8 and image.shape == (22, 22, 1)  # 3 images of 8x8: 2 rows of 2
        assert torch.equal(image, grid_of(inputs.first[batch][:3]))


def test_a_callback_logs_its_own_picture_and_the_visualizer_needs_a_destination_that_keeps_them(tmp_path):
    class Draw(tessera.Callback):
        def fit_end(self, state, logger):
            assert logger.takes_images
            logger.log_image("drawing", torch.full((2, 3, 1), 7, dtype=torch.uint8), state.timestamp)

    pictures = Pictures()
    trainer = tessera.Trainer(**tiny_components(max_duration="1ba"), callbacks=[Draw(), pictures])
    trainer.fit()
    assert [(tag, image.tolist(), batch) for tag, image, batch in pictures.got] == [("drawing", [[[7]] * 3] * 2, 1)]

    class Numbers(tessera.LoggerDestination):  # no log_image: keeps no pictures
        pass

    with pytest.raises(tessera.InputError, match="image_visualizer: no logger keeps images"):
        tessera.Trainer(**tiny_components(), callbacks=["image_visualizer", Numbers()])
