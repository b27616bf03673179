"""The ``data.*`` section of the run config (import-light: dataclasses and rewarm.errors only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewarm.errors import ConfigError

ROLES = ("upstream", "downstream")
PRESETS = ("pile", "slimpajama", "pythia_preshuffled")
FORMATS = ("auto", "text", "megatron")
PYTHIA_SEQ_LEN = 2048  # Pythia's rows hold 2049 tokens
READERS = ("auto", "plain", "datasets")

# Per preset: the document's text field, its subset (domain) field, and the file globs of each split under `root`.
PRESET_LAYOUTS: dict[str, dict[str, object]] = {
    "pile": {
        "text_field": "text",
        "subset_field": "meta.pile_set_name",
        "splits": {"train": ["train/*.jsonl.zst"], "validation": ["val.jsonl.zst"], "test": ["test.jsonl.zst"]},
    },
    "slimpajama": {
        "text_field": "text",
        "subset_field": "meta.redpajama_set_name",
        "splits": {
            "train": ["train/chunk*/*.jsonl.zst"],
            "validation": ["validation/chunk*/*.jsonl.zst"],
            "test": ["test/chunk*/*.jsonl.zst"],
        },
    },
}

# The LLaMA mix of SlimPajama domains (percent) as listed in DESIGN.md §2 for Gupta et al. 2023.
LLAMA_MIX: dict[str, float] = {
    "RedPajamaCommonCrawl": 67.0,
    "RedPajamaC4": 15.0,
    "RedPajamaGithub": 4.5,
    "RedPajamaBook": 4.5,
    "RedPajamaArXiv": 4.5,
    "RedPajamaWikipedia": 2.5,
    "RedPajamaStackExchange": 2.0,
}


@dataclass
class WeightKnot:
    """One point of a piecewise-linear weight schedule."""

    at: float = 0.0
    """Position in `data.mix_schedule_unit` (optimizer steps or training tokens)."""
    weight: float = 0.0
    """Relative weight of the source at that position (linear in between, constant outside)."""


@dataclass
class _SourceBase:
    paths: list[str] = field(default_factory=list)
    """Files or globs (.jsonl, .jsonl.zst, .jsonl.gz, .parquet), or remote paths (s3://, https://, hf://);
    or pre-tokenized .bin / .idx files (or their path prefix with format=megatron). May be left empty when
    `preset` and `root` are set."""
    preset: str | None = None
    """pile | slimpajama: sets text_field, subset_field and, with `root`, the split's file globs.
    pythia_preshuffled: Pythia's pre-shuffled Pile under `root` (document.idx + document.bin or its 21 shards),
    read as rows of 2049 tokens from row start_step x rows_per_step."""
    format: str = "auto"
    """auto (megatron when every path names a .bin / .idx, or preset=pythia_preshuffled; else text) | text |
    megatron (GPT-NeoX / Megatron MMIDIDX .bin + .idx; paths may then be path prefixes)."""
    append_eos: bool = False
    """megatron: add EOS after each document (files written by `rewarm tokenize` already hold it)."""
    start_step: int = 0
    """pythia_preshuffled: the first row read is start_step x rows_per_step (continues where Pythia's revision
    step<start_step> stopped)."""
    rows_per_step: int = 1024
    """pythia_preshuffled: rows per Pythia step (its batch: 1024)."""
    root: str | None = None
    """Directory (or remote prefix) of a preset layout; the split's globs are appended to `paths`."""
    split: str = "train"
    """train | validation | test: which split of the preset layout `root` points to."""
    text_field: str | None = None
    """Field holding the document text (dotted for nested fields); default: the preset's, else `text`."""
    subset_field: str | None = None
    """Dotted field naming the document's subset (domain), e.g. meta.redpajama_set_name; default: the preset's."""
    hf_dataset: str | None = None
    """A Hugging Face dataset id read with `datasets` streaming (instead of paths), e.g. cerebras/SlimPajama-627B."""
    hf_split: str = "train"
    """Split of `hf_dataset`."""

    def resolved_text_field(self) -> str:
        if self.text_field:
            return self.text_field
        return str(PRESET_LAYOUTS[self.preset]["text_field"]) if self.preset in PRESET_LAYOUTS else "text"

    def resolved_subset_field(self) -> str | None:
        if self.subset_field:
            return self.subset_field
        return str(PRESET_LAYOUTS[self.preset]["subset_field"]) if self.preset in PRESET_LAYOUTS else None

    def resolved_paths(self) -> list[str]:
        """`paths`, then the preset's split globs under `root` (in that order)."""
        out = list(self.paths)
        if self.preset == "pythia_preshuffled" and self.root:
            return out + [f"{self.root.rstrip('/')}/document"]  # a path prefix: document.idx + .bin / shards
        if self.preset and self.root:
            splits = PRESET_LAYOUTS[self.preset]["splits"]
            assert isinstance(splits, dict)
            out += [f"{self.root.rstrip('/')}/{g}" for g in splits[self.split]]
        return out

    def _validate_base(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError("preset", f"must be one of {', '.join(PRESETS)} or null, got {self.preset!r}")
        if self.root and not self.preset:
            raise ConfigError("root", "needs a preset (pile | slimpajama | pythia_preshuffled) to know the layout; or list files in paths")
        if self.preset and self.split not in ("train", "validation", "test"):
            raise ConfigError("split", f"must be train | validation | test, got {self.split!r}")
        if not self.resolved_paths() and not self.hf_dataset:
            raise ConfigError("paths", "must list at least one file or glob (or set preset + root, or hf_dataset)")
        if self.hf_dataset and self.resolved_paths():
            raise ConfigError("hf_dataset", "give either hf_dataset or paths/root, not both")
        _choice("format", self.format, FORMATS)
        self._validate_format()

    def resolved_format(self) -> str:
        """text | megatron (see `format`)."""
        if self.format != "auto":
            return self.format
        if self.preset == "pythia_preshuffled":
            return "megatron"
        paths = self.resolved_paths()
        return "megatron" if paths and all(p.endswith((".bin", ".idx")) for p in paths) else "text"

    def _validate_format(self) -> None:
        pythia = self.preset == "pythia_preshuffled"
        if self.resolved_format() == "text":
            if pythia:
                raise ConfigError("format", "preset pythia_preshuffled is pre-tokenized: format must be auto or megatron")
            if any(p.endswith((".bin", ".idx")) for p in self.resolved_paths()):
                raise ConfigError("paths", "mixes .bin / .idx files with text files; give them separate sources")
            for key, value, default in (("append_eos", self.append_eos, False), *self._pythia_keys()):
                if value != default:
                    raise ConfigError(key, "applies to pre-tokenized (format=megatron) sources only")
            return
        if self.hf_dataset:
            raise ConfigError("hf_dataset", "pre-tokenized sources are read from .bin / .idx files, not the hub")
        if self.text_field or self.subset_field:
            raise ConfigError("text_field" if self.text_field else "subset_field",
                              "a pre-tokenized source has no fields; remove it")
        if any(is_remote_path(p) for p in self.resolved_paths()):
            raise ConfigError("paths", "pre-tokenized files are memory-mapped: they must be local")
        if self.start_step < 0 or self.rows_per_step < 1:
            raise ConfigError("start_step" if self.start_step < 0 else "rows_per_step", "must be >= 0 / >= 1")
        if not pythia:
            for key, value, default in self._pythia_keys():
                if value != default:
                    raise ConfigError(key, "applies to preset=pythia_preshuffled only")
        elif self.append_eos:
            raise ConfigError("append_eos", "Pythia's rows are read as they are (no EOS is added)")

    def _pythia_keys(self) -> tuple[tuple[str, int, int], ...]:
        return (("start_step", self.start_step, 0), ("rows_per_step", self.rows_per_step, 1024))


@dataclass
class TrainSourceConfig(_SourceBase):
    weight: float = 1.0
    """Relative sampling weight of this source (normalised over all sources); mixing is per row."""
    weight_schedule: list[WeightKnot] = field(default_factory=list)
    """Optional piecewise-linear schedule of the weight over `data.mix_schedule_unit`, e.g. replay ramping
    0 -> 5: [{at: 0, weight: 0}, {at: 1000, weight: 5}]. Overrides `weight` when given."""
    subsets: dict[str, float] = field(default_factory=dict)
    """Relative weights of subsets (values of subset_field), e.g. the LLaMA mix; empty = all documents in
    their natural proportion. Subsets not listed are left out (a filter); weight 0 also leaves one out."""
    shuffle_files: bool = True
    """Visit the files (shards) of each pass in a new seeded order (documents inside a file stay in order)."""
    shuffle: str | None = None
    """Pre-tokenized sources: documents (a seeded shuffle of the documents in each pass) | none (index order).
    Default: documents, none for preset=pythia_preshuffled (its rows are already shuffled). Text: use shuffle_files."""

    def resolved_shuffle(self) -> str:
        """documents | none for a pre-tokenized source."""
        if self.shuffle is not None:
            return self.shuffle
        return "none" if self.preset == "pythia_preshuffled" else "documents"

    def validate(self) -> None:
        self._validate_base()
        if self.shuffle is not None:
            _choice("shuffle", self.shuffle, ("documents", "none"))
            if self.resolved_format() == "text":
                raise ConfigError("shuffle", "applies to pre-tokenized sources; text sources use shuffle_files")
            if self.preset == "pythia_preshuffled" and self.shuffle != "none":
                raise ConfigError("shuffle", "Pythia's pre-shuffled rows are read in order: shuffle must be none")
        if self.subsets and self.resolved_format() == "megatron":
            raise ConfigError("subsets", "a pre-tokenized source has no subset field; give separate sources")
        if self.weight < 0:
            raise ConfigError("weight", f"must be >= 0, got {self.weight}")
        for i, knot in enumerate(self.weight_schedule):
            if knot.weight < 0:
                raise ConfigError(f"weight_schedule.{i}.weight", f"must be >= 0, got {knot.weight}")
            if i and knot.at <= self.weight_schedule[i - 1].at:
                raise ConfigError(f"weight_schedule.{i}.at", "positions must increase strictly")
        if self.subsets and not self.resolved_subset_field():
            raise ConfigError("subsets", "needs subset_field (or a preset) to know each document's subset")
        if self.subsets and sum(self.subsets.values()) <= 0:
            raise ConfigError("subsets", "the subset weights sum to 0")
        if any(w < 0 for w in self.subsets.values()):
            raise ConfigError("subsets", "subset weights must be >= 0")


@dataclass
class ValSetConfig(_SourceBase):
    role: str = "downstream"
    """upstream (forgetting is measured on it) or downstream (adaptation is measured on it)."""
    max_tokens: int = 1_000_000
    """Predicted tokens evaluated at most: N = min(full rows in the files, max_tokens // seq_len) rows."""
    split: str = "validation"
    """Split of the preset layout (validation | test)."""
    subset_weights: dict[str, float] = field(default_factory=dict)
    """Optional weights of subsets for a weighted loss val/<set>/loss_weighted (e.g. the LLaMA mix on the
    SlimPajama validation split); per-subset losses need subset_field (or a preset)."""

    def validate(self) -> None:
        self._validate_base()
        if self.role not in ROLES:
            raise ConfigError("role", f"must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.max_tokens <= 0:
            raise ConfigError("max_tokens", f"must be > 0, got {self.max_tokens}")
        if self.subset_weights and not self.resolved_subset_field():
            raise ConfigError("subset_weights", "needs subset_field (or a preset) to know each document's subset")
        if any(w < 0 for w in self.subset_weights.values()):
            raise ConfigError("subset_weights", "subset weights must be >= 0")


@dataclass
class DataConfig:
    seq_len: int = 2048
    """Tokens predicted per row; rows hold seq_len + 1 tokens."""
    train: dict[str, TrainSourceConfig] = field(default_factory=dict)
    """Training sources by name, mixed by weight (each row comes from one source)."""
    val: dict[str, ValSetConfig] = field(default_factory=dict)
    """Validation sets by name."""
    num_workers: int = 1
    """DataLoader worker processes per rank (0 = read in the training process); may change on resume."""
    streams: int = 64
    """Logical streams the training data is read by, over all ranks: row r of optimizer step k always comes from
    the same stream and position, whatever the number of ranks and workers (docs/resuming.md, Streams). Must
    be a multiple of devices x num_nodes x max(1, num_workers); must stay the same on resume."""
    cache_dir: str | None = None
    """Where tokenized validation rows are cached (default: <run.out_dir>/.cache)."""
    document_mask: bool = False
    """position_ids restart at each document (attention stays inside documents, use_cache=False) and no loss
    is taken on predictions that cross a document boundary. Off by default: Pythia was trained without it."""
    on_bad_record: str = "skip"
    """skip (count in data/skipped_records, warn once per file) | error (stop, naming file and line)."""
    on_source_end: str = "repeat"
    """repeat (start a new pass over the source, files in a new order) | stop (end the stream)."""
    mix_schedule_unit: str = "steps"
    """Unit of `train.<name>.weight_schedule` positions: steps (optimizer steps) | tokens (training tokens)."""
    tokenize_batch_docs: int = 256
    """Documents tokenized per call of the fast tokenizer's batch encoder. A worker runs up to 3 such calls at
    once (2 with several workers); their encodings (~100 bytes per token) are most of its memory."""
    reader: str = "auto"
    """auto (local files: plain reader; remote paths: fsspec; hf_dataset: datasets streaming) | plain |
    datasets (read every source through `datasets` streaming, resumed with its state_dict)."""
    worker_start: str = "auto"
    """DataLoader worker start method: auto (forkserver when the tokenizer may use threads, else fork) | fork |
    spawn | forkserver."""

    def validate(self) -> None:
        if self.seq_len <= 0:
            raise ConfigError("seq_len", f"must be > 0, got {self.seq_len}")
        if not self.train:
            raise ConfigError("train", "needs at least one source: data.train.<name>.paths=[...]")
        if self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {self.num_workers}")
        if self.streams < 1:
            raise ConfigError("streams", f"must be >= 1, got {self.streams}")
        if self.tokenize_batch_docs < 1:
            raise ConfigError("tokenize_batch_docs", f"must be >= 1, got {self.tokenize_batch_docs}")
        _choice("on_bad_record", self.on_bad_record, ("skip", "error"))
        _choice("on_source_end", self.on_source_end, ("repeat", "stop"))
        _choice("mix_schedule_unit", self.mix_schedule_unit, ("steps", "tokens"))
        _choice("reader", self.reader, READERS)
        _choice("worker_start", self.worker_start, ("auto", "fork", "spawn", "forkserver"))
        for kind, sets in (("train", self.train), ("val", self.val)):
            for name, src in sets.items():
                _check_key(f"{kind}.{name}", name)
                if src.hf_dataset and self.reader == "plain":
                    raise ConfigError("reader", f"{kind}.{name}.hf_dataset is read with `datasets`: set reader=auto")
                try:
                    src.validate()
                except ConfigError as e:
                    raise ConfigError(f"{kind}.{name}.{e.key}", e.message) from None
        pythia = [f"{k}.{n}" for k, sets in (("train", self.train), ("val", self.val)) for n, s in sets.items()
                  if s.preset == "pythia_preshuffled"]
        if pythia and self.seq_len != PYTHIA_SEQ_LEN:
            raise ConfigError("seq_len", f"{pythia[0]} reads Pythia's rows of 2049 tokens: seq_len must be "
                              f"{PYTHIA_SEQ_LEN}, got {self.seq_len}")
        if not any(s.weight > 0 or any(k.weight > 0 for k in s.weight_schedule) for s in self.train.values()):
            raise ConfigError("train", "the weights of the sources sum to 0")


def check_streams(streams: int, world_size: int, num_workers: int) -> None:
    """Refuse data.streams that the ranks x reading processes per rank cannot share out whole (ConfigError
    ``data.streams`` naming the numbers and the nearest valid values)."""
    readers = world_size * max(1, num_workers)
    if streams % readers == 0:
        return
    below, above = streams // readers * readers, (streams // readers + 1) * readers
    nearest = f"{below} or {above}" if below else f"{above}"
    raise ConfigError("data.streams", f"{streams} streams cannot be shared out by {world_size} rank(s) x "
                      f"{max(1, num_workers)} DataLoader worker(s) per rank = {readers} readers: data.streams must be "
                      f"a multiple of {readers}; nearest valid: {nearest} (or change data.num_workers)")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {' | '.join(allowed)}, got {value!r}")


def is_remote_path(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _check_key(key: str, name: str) -> None:
    if not name or "/" in name or "." in name:
        raise ConfigError(key, f"source / set names may not be empty or contain '/' or '.': {name!r}")
