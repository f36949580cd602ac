"""RandAugment and AugMix from Python: the classes with their keyword arguments, the operations against hand
computation, the functional forms' generators, a training run in Tessera's DataLoader, and the refusal of a torch
DataLoader (which cannot run the transforms) before step 1."""
import pytest
import torch

import tessera
import tessera.functional as TF
from tessera.algorithms import AugMix, RandAugment


def test_classes_take_their_options_and_refuse_bad_ones():
    assert RandAugment().options == {"severity": 9, "depth": 2, "augmentation_set": "all"}
    assert AugMix().options == {"severity": 3, "depth": -1, "width": 3, "alpha": 1.0, "augmentation_set": "all"}
    assert RandAugment(depth=1, severity=10).options["depth"] == 1
    assert RandAugment().name == "randaugment" and AugMix().name == "augmix"
    assert "    augmentation_set (" in RandAugment.__doc__
    with pytest.raises(tessera.InputError, match=r"randaugment\.severity: 11 is out of range"):
        RandAugment(severity=11)
    with pytest.raises(tessera.InputError, match=r"augmix\.depth: 0; expected -1"):
        AugMix(depth=0)
    with pytest.raises(tessera.InputError, match=r'augmix\.augmentation_set: "most" is not allowed'):
        AugMix(augmentation_set="most")
    assert isinstance(tessera.algorithms.make({"randaugment": {"depth": 1}}), RandAugment)
    assert {"randaugment", "augmix"} <= set(tessera.algorithms.registered())


def test_operations_by_hand():
    x = torch.tensor([[[183.0, 255.0], [0.0, 64.0]]]) / 255  # [1, 2, 2]; 183 = 0b10110111
    assert torch.allclose(TF.augment_posterize(x, 4), torch.tensor([[[176.0, 240.0], [0.0, 64.0]]]) / 255)
    assert torch.allclose(TF.augment_solarize(x, 0.5), torch.where(x >= 0.5, 1 - x, x))
    assert torch.allclose(TF.augment_brightness(x, 2.0), (2 * x).clamp(0, 1))
    assert torch.allclose(TF.augment_autocontrast(torch.tensor([[[0.2, 0.4], [0.6, 0.3]]])),
                          torch.tensor([[[0.0, 0.5], [1.0, 0.25]]]))
    img = torch.arange(1.0, 9.0).view(1, 1, 2, 4) / 10
    assert torch.allclose(TF.augment_translate_x(img, 1), torch.tensor([[[[2.0, 3, 4, 0], [6, 7, 8, 0]]]]) / 10)
    assert torch.allclose(TF.augment_translate_y(img, 1), torch.tensor([[[[5.0, 6, 7, 8], [0, 0, 0, 0]]]]) / 10)
    sq = torch.arange(16.0).view(1, 1, 4, 4) / 16
    assert torch.allclose(TF.augment_rotate(sq, 90), torch.rot90(sq, 1, (-2, -1)), atol=1e-5)
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert torch.allclose(TF.augment_color(rgb, 0.0), torch.full((3, 1, 1), 0.299))
    assert TF.augmentation_set("safe") == ["autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x",
                                           "shear_y", "translate_x", "translate_y"]
    with pytest.raises(tessera.InputError, match=r'augment::apply\.op: "invert" is not an augmentation'):
        TF.augment_apply("invert", sq, 5)


def test_functional_forms_draw_from_a_seed_or_an_rng():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 8, 8)
    a = TF.augment_apply("rotate", images[0], 9, rng=3)
    rng = tessera.Rng(3)
    b = TF.augment_apply("rotate", images[0], 9, rng=rng)
    assert torch.equal(a, b) and rng.counter > 0  # the Rng was advanced in place
    batch = TF.randaugment_images(images, severity=9, depth=2, rng=11)
    for i in range(4):
        assert torch.equal(batch[i], TF.randaugment_image(images[i], 9, 2, rng=tessera.Rng(11).derive([i])))
    mixed = TF.augmix_images(images, width=2, rng=5)
    for i in range(4):
        assert torch.equal(mixed[i], TF.augmix_image(images[i], width=2, rng=tessera.Rng(5).derive([i])))
    assert float(mixed.min()) >= 0 and float(mixed.max()) <= 1 + 1e-6
    chains, mix = TF.augmix_weights(3, 1.0, rng=2)
    assert len(chains) == 3 and abs(sum(chains) - 1) < 1e-12 and 0 <= mix <= 1


def _train_data():
    return {"dataset": {"fashion_mnist": {"split": "train", "limit": 64}}, "loader": {"batch_size": 32, "workers": 1}}


def test_trains_in_tesseras_dataloader():
    trainer = tessera.Trainer(model={"cnn": {"width": 4}}, train_data=_train_data(), optimizer={"sgd": {"lr": 0.05}},
                              algorithms=[RandAugment(depth=1), AugMix(width=2)], max_duration="2ba", threads=1)
    trainer.fit()
    assert trainer.trace["randaugment/before_dataloader"]["count"] == 2
    assert trainer.trace["augmix/before_dataloader"]["count"] == 2


def test_a_torch_dataloader_is_refused_before_step_1():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(16, 1, 4, 4), torch.randint(0, 3, (16,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(tessera.InputError, match=r"randaugment runs in the data pipeline .* cannot run transforms"):
        tessera.Trainer(model=net, train_dataloader=data, optimizer={"sgd": {"lr": 0.1}}, algorithms=[RandAugment()],
                        max_duration="1ep", threads=1)
