"""Feature configurations from presets, files and flags (beeaudio.desktop.feature_presets and the shared
options), and the reproducing command lines the experiments print, without training anything."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from beeaudio.core.errors import EXIT_USAGE
from beeaudio.core.features import FeatureConfig
from beeaudio.desktop.commands.options import add_feature_options, feature_config, feature_overrides
from beeaudio.desktop.feature_presets import (
    PRESETS,
    FeatureSpecError,
    FrontEnd,
    front_end,
    preset,
    preset_name,
    read_feature_file,
    resolve,
)

#: The issue's full-band ablation front end, written out field by field.
FULLBAND = FeatureConfig(
    sample_rate=16000, n_fft=1024, hop_length=512, n_mels=40, n_mfcc=13, fmin=0, fmax=8000
)


def test_presets_are_valid_and_what_they_say() -> None:
    assert set(PRESETS) == {"default", "fullband", "osbh-2205"}
    assert preset(name="default") == FeatureConfig()
    assert preset(name="fullband") == FULLBAND
    osbh = preset(name="osbh-2205")
    assert osbh.sample_rate == 2205 and osbh.fmax < 2205 / 2 and osbh.fmin == 100.0
    # The default's time and frequency resolution at the recorder's own rate.
    assert abs(osbh.n_fft / osbh.sample_rate - 0.064) < 0.01 and osbh.hop_length * 2 == osbh.n_fft
    for name in PRESETS:
        for representation in ("stats", "frames"):
            config = preset(name=name, representation=representation)
            assert FeatureConfig.from_dict(config.to_dict()) == config  # what a bundle's manifest reads back
            assert preset_name(config=config) == name
    with pytest.raises(TypeError):
        PRESETS["fullband"]["fmax"] = 4000.0  # type: ignore[index]


def test_flags_override_the_preset_and_bad_values_are_usage_errors() -> None:
    config = resolve(spec="fullband", overrides={"n_mfcc": 40, "fmin": None, "hop_seconds": 0.5})
    assert (config.n_mfcc, config.n_mels, config.fmin, config.hop_seconds) == (40, 40, 0.0, 0.5)
    assert resolve(overrides={"sample_rate": 16000, "n_mels": 40, "n_mfcc": 40}).fmax == 1000.0
    with pytest.raises(FeatureSpecError) as caught:
        resolve(spec="default", overrides={"fmax": 8000})
    assert caught.value.exit_code == EXIT_USAGE
    assert "preset 'default' with --fmax 8000" in str(caught.value) and "Nyquist" in str(caught.value)
    with pytest.raises(FeatureSpecError, match="n_mfcc 41 > n_mels 40"):
        resolve(spec="fullband", overrides={"n_mfcc": 41})
    with pytest.raises(FeatureSpecError, match=r"unknown feature preset 'ful'.*default, fullband, osbh-2205"):
        resolve(spec="ful")
    with pytest.raises(FeatureSpecError, match=r"no such feature file 'missing\.toml'"):
        resolve(spec="missing.toml")
    with pytest.raises(FeatureSpecError, match="cannot override"):
        resolve(overrides={"n_fft": 1024})


def test_json_and_toml_files(tmp_path: Path) -> None:
    run_json = tmp_path / "feature_config.json"
    run_json.write_text(json.dumps(FULLBAND.to_dict()))
    assert resolve(spec=run_json) == FULLBAND
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format_version": 1, "feature_config": FULLBAND.to_dict()}))
    assert resolve(spec=str(manifest)) == FULLBAND
    toml = tmp_path / "wide.toml"
    toml.write_text(
        "# a band for 16 kHz recorders\n[features]\nsample_rate = 16000\nn_fft = 1024\nhop_length = 512\n"
        "n_mels = 40\nfmin = 0\nfmax = 8000\n"
    )
    assert resolve(spec=toml) == FULLBAND
    assert resolve(spec=toml, overrides={"fmax": 4000}).fmax == 4000.0
    assert front_end(spec=toml) == FrontEnd(name="wide", config=FULLBAND)
    assert front_end(spec="fullband").name == "fullband" and front_end().name == "default"
    # The bundle's rules: unknown fields, another representation, broken syntax are refused by name.
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"fmax": 900, "lowpass": 3000}))
    with pytest.raises(FeatureSpecError, match=r"unknown\.json.*unknown FeatureConfig keys \['lowpass'\]"):
        resolve(spec=unknown)
    frames = tmp_path / "frames.json"
    frames.write_text(json.dumps({"representation": "frames"}))
    with pytest.raises(FeatureSpecError, match=r"representation 'frames'.*takes 'stats'"):
        resolve(spec=frames)
    assert resolve(spec=frames, representation="frames").feature_shape == (61, 26)
    broken = tmp_path / "broken.toml"
    broken.write_text("fmax = = 3\n")
    with pytest.raises(FeatureSpecError, match=r"broken\.toml: not valid TOML"):
        read_feature_file(path=broken)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(FeatureSpecError, match="expected a table"):
        resolve(spec=listing)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_feature_options(parser)
    return parser


def test_the_shared_options() -> None:
    parser = _parser()
    args = parser.parse_args(["--features", "fullband", "--n-mfcc", "40", "--deltas", "2"])
    assert feature_overrides(args) == {"n_mfcc": 40, "deltas": 2}
    config = feature_config(args, representation="frames")
    assert (config.sample_rate, config.n_mfcc, config.deltas, config.representation) == (
        16000,
        40,
        2,
        "frames",
    )
    assert feature_config(parser.parse_args([]), representation="stats") == FeatureConfig()
    for name in PRESETS:
        assert name in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--n-mels", "many"])


def test_reproducing_command_lines_parse_back_to_the_same_config(tmp_path: Path) -> None:
    """The command an experiment prints (from the CLI or from Python) is complete: parsed by the CLI, it
    gives the experiment's configuration back, custom front ends included (written beside the report)."""
    from beeaudio.cli import build_parser
    from beeaudio.desktop.commands.experiments import _front_ends
    from beeaudio.desktop.experiments.codec import CodecConfig, command_line
    from beeaudio.desktop.experiments.sweep import SweepConfig
    from beeaudio.desktop.experiments.sweep import command_line as sweep_command

    narrow = FrontEnd(name="narrow", config=FeatureConfig(fmin=200.0, fmax=800.0))
    config = CodecConfig(
        bitrates=(32, 16),
        seed=4,
        quick=True,
        matched=False,
        repeats=3,
        bands=("fullband", narrow),
        training={"codec_weighting": "uniform"},
    )
    out = tmp_path / "report"
    argv = command_line(data=tmp_path / "data", out=out, config=config)
    assert argv[:3] == ["beeaudio", "experiment", "codec"]
    assert json.loads((out / "features" / "narrow.json").read_text()) == narrow.config.to_dict()
    args = build_parser().parse_args(shlex.split(shlex.join(argv))[1:])
    again = CodecConfig(
        bitrates=args.bitrates,
        seed=args.seed,
        test_fraction=args.test_fraction,
        quick=args.quick,
        matched=not args.no_matched,
        baselines=not args.no_baselines,
        random_split=not args.no_random_split,
        repeats=args.repeats,
        bands=_front_ends(args),
        training={"codec_weighting": args.codec_weighting},
    )
    assert again == config and Path(args.data) == tmp_path / "data" and Path(args.out) == out
    # The library call: the front end given as a training override.
    single = CodecConfig(training={"feature_config": FULLBAND})
    assert "--features fullband" in shlex.join(command_line(data=Path("d"), out=out, config=single))

    sweep = SweepConfig(
        layers=(1,), units=(8, 16), quick=True, training={"feature_config": preset(name="osbh-2205")}
    )
    sweep_argv = sweep_command(data=Path("d"), out=out, config=sweep)
    sweep_args = build_parser().parse_args(sweep_argv[1:])
    assert feature_config(sweep_args, representation="stats") == preset(name="osbh-2205")
    assert (sweep_args.layers, sweep_args.units, sweep_args.quick) == ((1,), (8, 16), True)


def test_band_and_features_together_are_refused() -> None:
    from beeaudio.cli import build_parser
    from beeaudio.desktop.commands.experiments import _front_ends

    parser = build_parser()
    args = parser.parse_args(
        ["experiment", "codec", "--data", "d", "--out", "o", "--band", "default,fullband"]
    )
    assert [b.name for b in _front_ends(args)] == ["default", "fullband"]
    args = parser.parse_args(
        [
            "experiment",
            "codec",
            "--data",
            "d",
            "--out",
            "o",
            "--band",
            "default,fullband",
            "--hop-seconds",
            "0.5",
        ]
    )
    assert {b.config.hop_seconds for b in _front_ends(args)} == {0.5}
    both = parser.parse_args(
        ["experiment", "codec", "--data", "d", "--out", "o", "--band", "a", "--features", "b"]
    )
    with pytest.raises(FeatureSpecError, match="not both"):
        _front_ends(both)
    bad = parser.parse_args(
        ["experiment", "codec", "--data", "d", "--out", "o", "--band", "default,fullband"]
    )
    bad.fmax = 3000.0  # under both Nyquist frequencies (4 and 8 kHz): applied to each front end
    assert [b.config.fmax for b in _front_ends(bad)] == [3000.0, 3000.0]
    bad.fmax = 6000.0  # above the default's 4 kHz Nyquist: refused, naming the front end and the flag
    with pytest.raises(FeatureSpecError, match="preset 'default' with --fmax 6000"):
        _front_ends(bad)
