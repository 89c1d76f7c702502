"""Experiment configs: every shipped experiment loads; overrides reach the config; bad keys are named."""

import pytest
from omegaconf import OmegaConf

from defocus_lit.cli import main
from defocus_lit.config import config_keys, experiment_names, load_experiment
from defocus_lit.errors import UserError

PAPER_EXPERIMENTS = {"pix2pix_4ch", "uniform_l1", "focus_penalty", "patch_mask", "two_stage"}


def test_the_five_experiments_of_the_design_ship():
    assert PAPER_EXPERIMENTS <= set(experiment_names())


@pytest.mark.parametrize("name", sorted(PAPER_EXPERIMENTS))
def test_experiment_loads_with_its_arch_and_mask(name):
    cfg = load_experiment(name, cpu_preset=False)
    expected = {
        "pix2pix_4ch": ("pix2pix_4ch", "binary"),
        "uniform_l1": ("dual_encoder", "binary"),
        "focus_penalty": ("dual_encoder", "binary"),
        "patch_mask": ("dual_skip", "patch"),
        "two_stage": ("two_stage", "binary"),
    }[name]
    assert (cfg.arch, cfg.data.mask_kind) == expected
    assert cfg.model.ngf == 64 and cfg.model.num_downs == 8  # the full recipe without the preset


def test_experiment_terms_replace_the_base_terms():
    cfg = load_experiment("patch_mask", cpu_preset=False)
    assert set(cfg.loss.terms) == {"depth_weighted_l1", "l1"}
    assert set(load_experiment("focus_penalty", cpu_preset=False).loss.terms) == {"l1", "focus_l1"}


def test_cpu_preset_shrinks_the_network_and_can_be_turned_off():
    assert load_experiment("patch_mask", cpu_preset=True).model.ngf == 16
    cfg = load_experiment("patch_mask", ["cpu_preset=false"], cpu_preset=True)
    assert cfg.model.ngf == 64 and cfg.cpu_preset is False


def test_overrides_reach_the_config_and_trainer_keys_pass_through():
    cfg = load_experiment(
        "patch_mask",
        [
            "optim.lr=1e-4",
            "loss.terms.ssim=5",
            "trainer.limit_train_batches=4",
            "trainer.devices=2",
            "data.synthetic.size=[64,96]",
        ],
        cpu_preset=True,
    )
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.loss.terms.ssim == 5 and cfg.loss.terms.depth_weighted_l1 > 0
    assert cfg.trainer.limit_train_batches == 4 and cfg.trainer.devices == 2
    assert list(cfg.data.synthetic.size) == [64, 96]


@pytest.mark.parametrize(
    "word, named",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("foo=1", "foo"),
        ("trainer.max_epoch=3", "trainer.max_epoch"),
        ("arch=unet", "arch"),
        ("data.mask_kind=soft", "data.mask_kind"),
        ("data.crop_size=100", "data.crop_size"),
        ("data.path=/nonexistent/d.h5", "/nonexistent/d.h5"),
        ("optim.lr", "optim.lr"),
    ],
)
def test_bad_overrides_are_errors_naming_the_key(word, named):
    with pytest.raises(UserError, match=named.replace(".", r"\.").replace("/", "/")):
        load_experiment("patch_mask", [word], cpu_preset=True)


def test_unknown_key_error_lists_the_valid_keys():
    with pytest.raises(UserError) as err:
        load_experiment("patch_mask", ["optim.lrr=1"])
    assert "optim.lr" in str(err.value) and "data.mask_kind" in str(err.value)


def test_unknown_experiment_lists_the_experiments():
    with pytest.raises(UserError, match="patch_mask"):
        load_experiment("nope")


def test_config_keys_are_dotted_leaves():
    keys = config_keys(load_experiment("two_stage", cpu_preset=True))
    assert {"optim.lr", "loss.terms.l1", "trainer.max_epochs", "data.synthetic.num"} <= set(keys)


def test_cli_train_rejects_unknown_key_with_one_error_line(capsys):
    assert main(["train", "patch_mask", "optim.bogus=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "optim.bogus" in err[0]


def test_cli_unknown_command_and_experiment(capsys):
    assert main(["nosuch"]) == 2
    assert main(["train", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nosuch'" in err and "unknown experiment 'nosuch'" in err


def test_yaml_path_as_experiment(tmp_path):
    path = tmp_path / "mine.yaml"
    OmegaConf.save({"name": "mine", "arch": "dual_skip", "optim": {"lr": 0.001}}, path)
    cfg = load_experiment(str(path), cpu_preset=False)
    assert cfg.name == "mine" and cfg.arch == "dual_skip" and cfg.optim.lr == 0.001
