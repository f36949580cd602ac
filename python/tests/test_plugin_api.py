"""The Python API as users write it: ordering rules with typos, plugin errors that say where they happened,
logged notes that reach the console, recipe values from Python types, plans from names."""
import pathlib
import sys

import pytest
import torch

import tessera
from conftest import tiny_components


def _counter(order):
    class Counter(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="counter", accesses=[tessera.Access("after_dataloader")], order=order)

        def apply(self, event, state, logger):
            pass

    return Counter()


def test_a_misspelt_ordering_rule_is_a_plan_warning_with_did_you_mean():
    plan = tessera.plan([_counter([tessera.before("selectve_backprop", "first")]),
                         tessera.algorithms.SelectiveBackprop()])
    assert plan.warnings == ['counter: the ordering rule "before selectve_backprop" matches no algorithm of this run; '
                             'did you mean "selective_backprop"?']
    right = tessera.plan([tessera.algorithms.SelectiveBackprop(), _counter([tessera.before("selective_backprop")])])
    assert right.warnings == [] and right["after_dataloader"] == ["counter", "selective_backprop"]


def test_a_rule_at_an_event_the_algorithm_does_not_act_on_is_refused():
    with pytest.raises(tessera.InputError, match=r'counter: the ordering rule "before selective_backprop at after_loss" '
                                                 r"is at after_loss, an event counter does not act on \(its events: "
                                                 r"after_dataloader\)"):
        tessera.plan([_counter([tessera.before("selective_backprop", event="after_loss")]),
                      tessera.algorithms.SelectiveBackprop()])


def test_plan_takes_names_and_option_dicts():
    plan = tessera.plan(["label_smoothing", {"selective_backprop": {"keep": 0.5}}])
    assert plan["before_loss"] == ["label_smoothing"]
    assert plan["after_dataloader"] == ["selective_backprop"]
    with pytest.raises(tessera.InputError, match="label_smoothng"):
        tessera.plan(["label_smoothng"])


def test_info_from_a_python_callback_reaches_stderr_without_a_progress_bar(capfd):
    class Notes(tessera.Callback):
        def fit_start(self, state, logger):
            logger.info("starting now")
            logger.warn("careful")

    trainer = tessera.Trainer(**tiny_components(max_duration="1ba"), callbacks=[Notes()])
    trainer.fit()
    err = capfd.readouterr().err
    assert "tessera: info: starting now\n" in err
    assert "tessera: warning: careful\n" in err


def test_python_exceptions_keep_their_type_and_say_where_they_were_raised():
    class Boom(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="boom", accesses=[tessera.Access("after_loss")])

        def apply(self, event, state, logger):
            raise ValueError("bad value")

    trainer = tessera.Trainer(**tiny_components(), algorithms=[Boom()])
    with pytest.raises(ValueError) as info:
        trainer.fit()
    assert str(info.value) == "bad value"  # the user's own message (pytest 8 also matches notes: compare here)
    if sys.version_info >= (3, 11):
        assert info.value.__notes__ == ['in algorithm "boom" at after_loss']


def test_spec_given_as_a_dict_is_a_clear_error():
    class DictSpec(tessera.Algorithm):
        spec = {"name": "dict_spec"}

        def apply(self, event, state, logger):
            pass

    with pytest.raises(tessera.InputError, match=r"DictSpec.spec: expected a tessera.AlgorithmSpec .* got "
                                                 r"\{'name': 'dict_spec'\} \(dict\)"):
        tessera.Trainer(**tiny_components(), algorithms=[DictSpec()])

    class NoApply(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="no_apply")

    with pytest.raises(tessera.InputError, match=r"NoApply: a Python tessera.Algorithm must define apply"):
        tessera.Trainer(**tiny_components(), algorithms=[NoApply()])


def test_a_misspelt_callback_method_is_warned_about_at_construction():
    class Typo(tessera.Callback):
        def batch_ends(self, state, logger):
            pass

        def helper(self):  # not near any event: no warning
            pass

    with pytest.warns(UserWarning, match=r'Typo.batch_ends is not an event, so it is never called; did you mean '
                                         r'"batch_end"\?') as record:
        tessera.Trainer(**tiny_components(max_duration="1ba"), callbacks=[Typo()])
    assert len([w for w in record if "helper" in str(w.message)]) == 0


def test_recipe_values_from_python_types(tmp_path):
    trainer = tessera.Trainer(**tiny_components(max_duration=tessera.Time("2ba"), run_dir=tmp_path / "run"))
    assert trainer.options["max_duration"] == "2ba"
    assert trainer.options["run_dir"] == str(tmp_path / "run")
    np = pytest.importorskip("numpy")
    trainer = tessera.Trainer(**tiny_components(seed=np.int64(3), optimizer={"sgd": {"lr": np.float32(0.5)}}))
    assert trainer.options["seed"] == 3
    assert trainer.recipe.to_dict()["optimizer"]["sgd"]["lr"] == 0.5
    with pytest.raises(tessera.InputError, match=r"seed: cannot be written in a recipe: \{1, 2\} \(set\)"):
        tessera.Trainer(**tiny_components(seed={1, 2}))
    assert isinstance(pathlib.Path(trainer.options["run_dir"]), pathlib.Path)


def test_state_loss_and_outputs_accept_none_as_no_tensor():
    seen = []

    class Clears(tessera.Callback):
        def fit_end(self, state, logger):
            state.loss = torch.tensor(2.0)
            state.outputs = torch.ones(2)
            assert state.loss.item() == 2.0 and state.outputs.sum().item() == 2.0
            state.loss = None
            state.outputs = None
            seen.append((state.loss, state.outputs))
            with pytest.raises(tessera.InputError, match=r"State: expected a torch.Tensor or None, got 1.5 \(float\)"):
                state.loss = 1.5

    tessera.Trainer(**tiny_components(max_duration="1ba"), callbacks=[Clears()]).fit()
    assert seen == [(None, None)]


def test_inputs_cast_to_float64_are_refused_naming_the_algorithm_and_event():
    class Doubles(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(name="doubles", accesses=[tessera.Access("after_dataloader", writes=["inputs"])])

        def apply(self, event, state, logger):
            state.batch["input"] = state.batch["input"].double()

    trainer = tessera.Trainer(**tiny_components(), algorithms=[Doubles()])
    with pytest.raises(tessera.InputError, match=r'algorithm "doubles" at after_dataloader: the inputs were Float and are '
                                                 r"now Double, but the model's parameters are Float"):
        trainer.fit()
    assert trainer.state.timestamp.batch == 0
