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
    assert set(cfg.loss.terms) == {"depth_weighted_l1", "l1", "log_mse"}
    assert set(load_experiment("pix2pix_4ch", cpu_preset=False).loss.terms) == {"l1", "log_mse"}
    assert set(load_experiment("focus_penalty", cpu_preset=False).loss.terms) == {"l1", "focus_l1"}


def test_cpu_preset_shrinks_the_network_and_can_be_turned_off():
    assert load_experiment("patch_mask", cpu_preset=True).model.ngf == 16
    cfg = load_experiment("patch_mask", ["cpu_preset=false"], cpu_preset=True)
    assert cfg.model.ngf == 64 and cfg.cpu_preset is False


@pytest.mark.parametrize("exp", ["patch_mask", "pix2pix_4ch"])
@pytest.mark.parametrize("cpu_preset", [True, False])
def test_main_experiments_train_on_whole_frames_with_global_context(exp, cpu_preset):
    cfg = load_experiment(exp, cpu_preset=cpu_preset)
    assert cfg.model.global_context
    assert [cfg.data.crop_size] * 2 == list(cfg.data.synthetic.size)  # the crop is the whole embedded frame


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


def test_strength_range_is_off_by_default_and_checked():
    assert load_experiment("pix2pix_4ch", cpu_preset=True).data.strength_range is None
    cfg = load_experiment("pix2pix_4ch", ["data.strength_range=[0.5,2]"], cpu_preset=True)
    assert list(cfg.data.strength_range) == [0.5, 2.0]
    for bad in ("[2,0.5]", "[0,1]", "[-1,1]", "[1,1]", "[1]", "[0.5,1,2]"):
        with pytest.raises(UserError, match=r"^data\.strength_range=\[.*\]: must be \[lo, hi\] with 0 < lo < hi$"):
            load_experiment("pix2pix_4ch", [f"data.strength_range={bad}"], cpu_preset=True)
    with pytest.raises(UserError, match=r"^data\.strength_range: expected a list of floats or null, got 'x'"):
        load_experiment("pix2pix_4ch", ["data.strength_range=x"], cpu_preset=True)


def test_patch_split_is_off_by_default_checked_and_for_patch_masks_only():
    assert load_experiment("patch_mask", cpu_preset=True).data.patch_split is None
    assert list(load_experiment("patch_mask", ["data.patch_split=[110,190]"]).data.patch_split) == [110.0, 190.0]
    for bad in ("[190,110]", "[0,150]", "[100,255]", "[150]"):
        with pytest.raises(UserError, match=r"^data\.patch_split=\[.*\]: must be \[lo, hi\] with 0 < lo <= hi < 255$"):
            load_experiment("patch_mask", [f"data.patch_split={bad}"])
    with pytest.raises(UserError, match=r"^data\.patch_split: splits 3-level patch masks; data\.mask_kind is binary$"):
        load_experiment("pix2pix_4ch", ["data.patch_split=[110,190]"])


def test_the_amount_input_is_on_by_default_and_its_unknown_share_checked():
    cfg = load_experiment("pix2pix_4ch", cpu_preset=True)
    assert cfg.model.amount_input is True and cfg.data.unknown_amount == 0.5
    for bad in ("-0.1", "1.5"):
        with pytest.raises(UserError, match=rf"^data\.unknown_amount={bad}: a share of the samples, from 0 to 1$"):
            load_experiment("pix2pix_4ch", [f"data.unknown_amount={bad}"], cpu_preset=True)
    with pytest.raises(UserError, match=r"^data\.strength_range: .*needs model\.amount_input=true$"):
        load_experiment("pix2pix_4ch", ["model.amount_input=false", "data.strength_range=[0.5,2]"], cpu_preset=True)


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


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_wrong_type_in_an_experiment_file_is_one_line_naming_key_value_and_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.yaml"
    path.write_text("name: x\noptim:\n  lr: fast\n")
    line = _cli_error(capsys, ["train", str(path), f"output_dir={tmp_path / 'outputs'}"])
    assert line == f"error: optim.lr: expected a float, got 'fast' ({path})"
    assert list(tmp_path.iterdir()) == [path]  # no run folder, no config.yaml, no dataset


@pytest.mark.parametrize("text", ['keep_focus: "no"', "keep_focus: 'off'", "data: {photometric: 'off'}"])
def test_a_quoted_word_for_a_boolean_is_an_error_not_true(text, tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(f"name: x\n{text}\n")
    with pytest.raises(UserError, match=r"expected true or false, got '(no|off)' \(.*x\.yaml\)"):
        load_experiment(str(path), cpu_preset=False)


def test_unquoted_yaml_booleans_still_work(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nkeep_focus: no\ndata: {photometric: off}\n")
    cfg = load_experiment(str(path), cpu_preset=False)
    assert cfg.keep_focus is False and cfg.data.photometric is False


@pytest.mark.parametrize(
    "word, message",
    [
        ("optim.lr=fast", "optim.lr: expected a float, got 'fast' (override)"),
        ("model.ngf=1.5", "model.ngf: expected an integer, got 1.5 (override)"),
        ("model.ngf=0", "model.ngf: expected an integer >= 1, got 0 (override)"),
        ("model.level_smooth=-1", "model.level_smooth: expected a number >= 0, got -1 (override)"),
        ("optim.grad_clip=big", "optim.grad_clip: expected a float or null, got 'big' (override)"),
        ("data.synthetic.size=[64,x]", "data.synthetic.size: expected a list of integers, got [64, 'x'] (override)"),
        ("resume=3", "resume: expected true or false or a string, got 3 (override)"),
        ("loss.terms.l1=heavy", "loss.terms.l1: expected a float, got 'heavy' (override)"),
        ("loss.terms.l2=1", "loss.terms.l2: unknown loss term 'l2'; registered: "),
        ("model.norm=group", "model.norm: expected one of batch, instance, got 'group' (override)"),
        ("model.head=rgbx", "model.head: expected one of rgb, blur_stack, blur_spread, got 'rgbx' (override)"),
        ("loss.gan_mode=wgan", "loss.gan_mode: expected one of vanilla, lsgan, hinge, got 'wgan' (override)"),
        ("render.blur_model=gauss", "render.blur_model: expected one of thin_lens, blur_map, got 'gauss'"),
        ("logger.wandb=maybe", "logger.wandb: expected one of auto, online, offline, disabled, got 'maybe'"),
        ("trainer.max_epochs=x", "trainer.max_epochs: expected an integer or null, got 'x' (override)"),
        ("trainer.max_epochs=true", "trainer.max_epochs: expected an integer or null, got true (override)"),
        ("trainer.precision=17", "trainer.precision: expected 64 or 32 or 16 or "),
    ],
)
def test_wrong_values_name_key_type_value_and_source(word, message):
    with pytest.raises(UserError) as err:
        load_experiment("patch_mask", [word], cpu_preset=True)
    assert str(err.value).startswith(message), str(err.value)


def test_choices_come_from_the_registries(monkeypatch):
    """A generator or loss registered in code is a valid choice at once: no list in the config repeats them."""
    from defocus_lit.losses import LOSSES
    from defocus_lit.models.networks import GENERATORS

    monkeypatch.setitem(GENERATORS, "my_unet", GENERATORS["pix2pix_4ch"])
    monkeypatch.setitem(LOSSES, "my_loss", LOSSES["l1"])
    cfg = load_experiment("patch_mask", ["arch=my_unet", "loss.terms.my_loss=2"], cpu_preset=True)
    assert cfg.arch == "my_unet" and cfg.loss.terms.my_loss == 2.0


def test_base_yaml_gives_every_schema_key_a_value_and_overrides_keep_their_types():
    from omegaconf import OmegaConf

    from defocus_lit.config import ExperimentConfig, schema_keys

    cfg = load_experiment("pix2pix_4ch", ["optim.lr=1", "data.synthetic.size=[64,'96']"], cpu_preset=False)
    assert not OmegaConf.missing_keys(cfg)
    assert set(schema_keys()) - {"trainer", "loss.terms"} <= set(config_keys(cfg))
    assert isinstance(cfg.optim.lr, float) and list(cfg.data.synthetic.size) == [64, 96]
    assert OmegaConf.get_type(cfg) is ExperimentConfig
