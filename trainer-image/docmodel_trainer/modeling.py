"""Loading the base model and its tokenizer, for training and for evaluation.

    base = resolve_base_model(spec.base_model, workdir)      # HF id, local dir, or S3 mirror
    tokenizer = load_tokenizer(base)
    model = load_model(base, quantize_4bit=True)             # NF4 on CUDA (QLoRA)

The 4-bit NF4 path (bitsandbytes) exists only on CUDA; bitsandbytes is imported only there.
On CUDA the frozen weights stay in bf16 (no fp32 up-casting of norms, embeddings or the LM head:
the adapters alone train), and attention is FlashAttention 2 when installed (varlen kernels for
padding-free packed batches), PyTorch SDPA otherwise (a block-diagonal mask built from the
packed position ids). On CPU the model loads in fp32 with SDPA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docmodel.api import BaseModelSpec
from docmodel.modelfacts import peft_compat as peft_compat  # the one filter, shared
from docmodel.storage import NotFound, download_tree, open_store
from docmodel_trainer.common import EXIT_BAD_INPUT, EXIT_UPSTREAM, JobError

log = logging.getLogger("docmodel.trainer.modeling")

# peft imports bitsandbytes whenever it is installed (peft/helpers.py), and bitsandbytes' CPU
# backend then logs a warning about an optional Hub kernel (`kernels-community`) that this image
# never uses: 4-bit runs only on CUDA here. Raise that one logger's level so CPU runs stay quiet.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def quiet_progress_bars() -> None:
    """Jobs log key=value lines; progress bars would only garble the pod's log."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_base_model(spec: BaseModelSpec, workdir: Path) -> str:
    """A local directory or a Hugging Face id that `from_pretrained` can open.

    With `mirror` set, the mirror's files are downloaded once into `workdir/base-model`.
    A `name` that is an existing directory is used as is (local mode, tests).
    """
    if spec.mirror:
        dest = workdir / "base-model"
        if not (dest / "config.json").is_file():
            try:
                files = download_tree(open_store(spec.mirror), "", dest)
            except NotFound:
                raise JobError(
                    f"base model mirror {spec.mirror} holds no files",
                    "BaseModelMissing",
                    EXIT_BAD_INPUT,
                ) from None
            log.info("Downloaded base model mirror=%s files=%d", spec.mirror, len(files))
        if not (dest / "config.json").is_file():
            raise JobError(
                f"base model mirror {spec.mirror} has no config.json",
                "BaseModelMissing",
                EXIT_BAD_INPUT,
            )
        return str(dest)
    if Path(spec.name).is_dir():
        return str(Path(spec.name).resolve())
    return spec.name


def load_pretrained(load: Callable[[str], Any], path: str) -> Any:
    """`load(path)` (a `from_pretrained`), its failures turned into errors that name the model.

    A local directory that does not exist, or a name that is no Hugging Face id: bad input
    (exit 2). A directory that holds no loadable model (no config.json, missing files): bad
    input. A Hub id that cannot be had (offline with no cached copy, gated or private without
    a token, no such repository, the network or the Hub failing): the upstream failed (exit 5).
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    local = Path(path)
    if not local.is_dir():
        if path.startswith(("/", ".", "~")) or local.exists():
            raise JobError(
                f"base model {path} is not a directory", "BaseModelMissing", EXIT_BAD_INPUT
            )
        try:
            validate_repo_id(path)
        except HFValidationError:
            raise JobError(
                f"base model {path} is neither a local directory nor a valid Hugging Face "
                "model id (namespace/name)",
                "BaseModelInvalid",
                EXIT_BAD_INPUT,
            ) from None
    elif not (local / "config.json").is_file():
        raise JobError(
            f"base model directory {path} has no config.json (not a Hugging Face model)",
            "BaseModelInvalid",
            EXIT_BAD_INPUT,
        )
    try:
        return load(path)
    except (OSError, ValueError) as exc:  # transformers: ValueError for unusable local files
        detail = " ".join(str(exc).split())
        if local.is_dir():
            raise JobError(
                f"base model directory {path} does not hold a loadable model: {detail}",
                "BaseModelInvalid",
                EXIT_BAD_INPUT,
            ) from None
        if not isinstance(exc, OSError):
            raise
        raise JobError(
            f"base model {path} could not be found locally or fetched from the Hugging Face "
            f"Hub (offline without a cached copy, gated or private without a token, or no such "
            f"model): {detail}",
            "BaseModelUnavailable",
            EXIT_UPSTREAM,
        ) from None


def load_tokenizer(path: str, *, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, path)
    if tokenizer.chat_template is None:
        raise JobError(
            f"base model {path} has no chat template; use an instruct model",
            "NoChatTemplate",
            EXIT_BAD_INPUT,
        )
    if tokenizer.pad_token is None:
        # Llama 3.1 ships a reserved padding token; fall back to end-of-sequence otherwise.
        pad = "<|finetune_right_pad_id|>"
        tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def attention_implementation() -> str:
    from transformers.utils import is_flash_attn_2_available

    if has_cuda() and is_flash_attn_2_available():
        return "flash_attention_2"
    return "sdpa"


def load_model(path: str, *, quantize_4bit: bool) -> Any:
    """The base model: NF4 4-bit (bf16 compute) or bf16 on CUDA, fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    cuda = has_cuda()
    if quantize_4bit and not cuda:
        raise JobError(
            "method qlora needs a CUDA GPU (4-bit NF4 via bitsandbytes); none is visible. "
            "Use method lora to train on CPU.",
            "QloraNeedsGpu",
            EXIT_BAD_INPUT,
        )
    kwargs: dict[str, Any] = {
        "dtype": torch.bfloat16 if cuda else torch.float32,
        "attn_implementation": attention_implementation(),
    }
    if cuda:
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=torch.bfloat16,
        )
    model = load_pretrained(lambda p: AutoModelForCausalLM.from_pretrained(p, **kwargs), path)
    log.info(
        "Loaded base model path=%s quantized_4bit=%s dtype=%s attention=%s device=%s",
        path,
        quantize_4bit,
        kwargs["dtype"],
        kwargs["attn_implementation"],
        "cuda" if cuda else "cpu",
    )
    return model
