"""The data.* config: presets, schedules, subsets, refusals with the key named."""

from __future__ import annotations

import pytest

from rewarm.data.config import LLAMA_MIX
from rewarm.errors import ConfigError


def test_presets_resolve_fields_and_split_globs(data_cfg):
    cfg = data_cfg(train={"sp": {"preset": "slimpajama", "root": "/d/slim/", "subsets": LLAMA_MIX}},
                   val={"pile": {"preset": "pile", "root": "/d/pile"}, "spv": {"preset": "slimpajama", "root": "/s"}})
    sp = cfg.train["sp"]
    assert sp.resolved_paths() == ["/d/slim/train/chunk*/*.jsonl.zst"]
    assert sp.resolved_text_field() == "text" and sp.resolved_subset_field() == "meta.redpajama_set_name"
    assert cfg.val["pile"].resolved_paths() == ["/d/pile/val.jsonl.zst"]  # val sets default to the validation split
    assert cfg.val["pile"].resolved_subset_field() == "meta.pile_set_name"
    assert cfg.val["spv"].resolved_paths() == ["/s/validation/chunk*/*.jsonl.zst"]
    assert sum(LLAMA_MIX.values()) == pytest.approx(100.0)


def test_plain_source_defaults(data_cfg):
    src = data_cfg(train={"a": {"paths": ["x.jsonl"], "text_field": "content"}}).train["a"]
    assert src.resolved_paths() == ["x.jsonl"] and src.resolved_text_field() == "content"
    assert src.resolved_subset_field() is None and src.shuffle_files


@pytest.mark.parametrize("values,key", [
    ({"train": {"a": {"paths": ["x"], "preset": "c4"}}}, "train.a.preset"),
    ({"train": {"a": {"root": "/d"}}}, "train.a.root"),
    ({"train": {"a": {"preset": "pile", "root": "/d", "split": "dev"}}}, "train.a.split"),
    ({"train": {"a": {}}}, "train.a.paths"),
    ({"train": {"a": {"paths": ["x"], "hf_dataset": "org/ds"}}}, "train.a.hf_dataset"),
    ({"train": {"a": {"paths": ["x"], "weight": -1}}}, "train.a.weight"),
    ({"train": {"a": {"paths": ["x"], "weight_schedule": [{"at": 5, "weight": 1}, {"at": 5, "weight": 2}]}}},
     "train.a.weight_schedule.1.at"),
    ({"train": {"a": {"paths": ["x"], "weight_schedule": [{"at": 0, "weight": -1}]}}}, "train.a.weight_schedule.0.weight"),
    ({"train": {"a": {"paths": ["x"], "subsets": {"A": 1.0}}}}, "train.a.subsets"),
    ({"train": {"a": {"preset": "pile", "root": "/d", "subsets": {"A": 0.0}}}}, "train.a.subsets"),
    ({"train": {"a": {"paths": ["x"], "weight": 0}}}, "train"),
    ({"train": {"a": {"paths": ["x"]}}, "on_bad_record": "ignore"}, "on_bad_record"),
    ({"train": {"a": {"paths": ["x"]}}, "on_source_end": "loop"}, "on_source_end"),
    ({"train": {"a": {"paths": ["x"]}}, "mix_schedule_unit": "epochs"}, "mix_schedule_unit"),
    ({"train": {"a": {"hf_dataset": "org/ds"}}, "reader": "plain"}, "reader"),
    ({"train": {"a": {"paths": ["x"]}}, "worker_start": "thread"}, "worker_start"),
    ({"train": {"a": {"paths": ["x"]}}, "tokenize_batch_docs": 0}, "tokenize_batch_docs"),
    ({"train": {"a": {"paths": ["x"]}}, "val": {"v": {"paths": ["y"], "subset_weights": {"A": 1}}}},
     "val.v.subset_weights"),
    ({"train": {"a": {"paths": ["x"]}}, "val": {"v": {"paths": ["y"], "role": "sideways"}}}, "val.v.role"),
])
def test_refusals_name_the_key(data_cfg, values, key):
    with pytest.raises(ConfigError) as e:
        data_cfg(**values)
    assert e.value.key == key


def test_zero_base_weight_with_schedule_is_accepted(data_cfg):
    cfg = data_cfg(train={"a": {"paths": ["x"], "weight": 0, "weight_schedule": [{"at": 0, "weight": 0},
                                                                                  {"at": 100, "weight": 5}]}})
    assert [(k.at, k.weight) for k in cfg.train["a"].weight_schedule] == [(0, 0), (100, 5)]


def test_run_config_loads_a_data_section(tmp_path):
    from rewarm.config import load

    yaml = tmp_path / "c.yaml"
    yaml.write_text("""
data:
  seq_len: 128
  document_mask: true
  mix_schedule_unit: tokens
  train:
    slimpajama: {preset: slimpajama, root: /data/slim, weight: 95, subsets: {RedPajamaC4: 15, RedPajamaCommonCrawl: 67}}
    pile: {preset: pile, root: /data/pile, weight_schedule: [{at: 0, weight: 0}, {at: 1.0e9, weight: 5}]}
  val:
    pile: {preset: pile, root: /data/pile, role: upstream, max_tokens: 1024}
trainer: {max_steps: 10}
""")
    cfg = load(yaml, ["data.on_bad_record=error"]).data
    assert cfg.document_mask and cfg.on_bad_record == "error" and cfg.train["pile"].weight_schedule[1].weight == 5
    with pytest.raises(ConfigError) as e:
        load(yaml, ["data.train.pile.preset=c4"])
    assert e.value.key == "data.train.pile.preset"


def test_fingerprint_depends_on_data_not_on_layout(tokenizer, data_cfg, pile_dir):
    from rewarm.data import build_train_loader

    def fp(cfg, **kw):
        args = {"micro_batch_size": 2, "seed": 0, "rank": 0, "world_size": 1, **kw}
        return build_train_loader(cfg, tokenizer, **args).fingerprint()

    base = data_cfg(seq_len=16, train={"p": {"preset": "pile", "root": str(pile_dir)}})
    assert fp(base) == fp(base, micro_batch_size=4, seed=3)  # layout is checked separately, with its own message
    assert fp(base) != fp(data_cfg(seq_len=32, train={"p": {"preset": "pile", "root": str(pile_dir)}}))
    assert fp(base) != fp(data_cfg(seq_len=16, document_mask=True, train={"p": {"preset": "pile", "root": str(pile_dir)}}))
    before = fp(base)
    moved = pile_dir.parent / "moved"
    pile_dir.rename(moved)  # the same files on another mount: still the same data
    assert fp(data_cfg(seq_len=16, train={"p": {"preset": "pile", "root": str(moved)}})) == before
    (moved / "train" / "03.jsonl.zst").write_bytes((moved / "train" / "00.jsonl.zst").read_bytes())
    assert fp(data_cfg(seq_len=16, train={"p": {"preset": "pile", "root": str(moved)}})) != before
