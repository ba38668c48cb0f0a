"""Loading the base model and its tokenizer, for training and for evaluation.

    base = resolve_base_model(spec.base_model, workdir, spec.source.endpoint)  # see below
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
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docmodel import basemodel
from docmodel.api import BaseModelSpec
from docmodel.modelfacts import peft_compat as peft_compat  # the one filter, shared
from docmodel.modelfacts import usable_cpus
from docmodel.storage import NotFound, download_tree, open_store
from docmodel_trainer.common import EXIT_BAD_INPUT, EXIT_UPSTREAM, JobError
from docmodel_trainer.distributed import FSDP_NEEDS_CUDA, SINGLE, World

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


def resolve_base_model(
    spec: BaseModelSpec, workdir: Path, mirror_endpoint: str | None = None
) -> str:
    """A local directory or a Hugging Face id that `from_pretrained` can open, found in the
    core's order (`docmodel.basemodel.locate`): a directory, the model cache, the packaged
    model (converted once into the cache), the S3 mirror (downloaded once into
    `workdir/base-model`, with the source's S3 endpoint `mirror_endpoint` and credentials),
    else the Hub id."""
    found = basemodel.locate(spec)
    if found.kind in ("directory", "cache"):
        assert found.path is not None
        log.info("Resolved base model name=%s source=%s path=%s", spec.name, found.kind, found.path)
        return str(found.path)
    if found.kind == "package":
        assert found.path is not None and found.source is not None
        return str(convert_packaged(Path(found.source), found.path, spec.name))
    if found.kind == "mirror":
        return str(_download_mirror(spec, workdir, mirror_endpoint))
    log.info("Resolved base model name=%s source=hub tried=%r", spec.name, found.explain())
    return spec.name


def _download_mirror(spec: BaseModelSpec, workdir: Path, endpoint: str | None) -> Path:
    assert spec.mirror is not None
    dest = workdir / "base-model"
    if not (dest / "config.json").is_file():
        try:
            files = download_tree(open_store(spec.mirror, endpoint=endpoint), "", dest)
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
    return dest


def convert_packaged(gguf: Path, dest: Path, name: str) -> Path:
    """Dequantize a packaged GGUF model into an ordinary Hugging Face directory (fp32
    safetensors, tokenizer with its chat template, config without the GGUF quantization
    settings) at `dest`, once: written beside it, then renamed into place, so a concurrent or
    interrupted conversion never leaves a half-written model where `locate` looks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if basemodel.is_complete(dest):
        return dest
    started = time.monotonic()
    log.info("Converting packaged base model name=%s file=%s dest=%s", name, gguf, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except Exception as exc:  # the GGUF reader fails in many ways on a damaged file
            raise JobError(
                f"the packaged base model {gguf} could not be read (reinstall its package): "
                + " ".join(str(exc).split())[:300],
                "BaseModelInvalid",
                EXIT_BAD_INPUT,
            ) from None
        model.hf_quantizer = None  # type: ignore[assignment]  # dequantized: saved as fp32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = name
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        basemodel.directory_digest(tmp)  # recorded now, so the revision id reads no weights
        try:
            tmp.rename(dest)
        except OSError:
            if not basemodel.is_complete(dest):  # another process finished first otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "Converted packaged base model name=%s path=%s seconds=%.1f",
        name,
        dest,
        time.monotonic() - started,
    )
    return dest


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
        tried = basemodel.locate(BaseModelSpec(name=path)).explain()
        raise JobError(
            f"base model {path} could not be found locally or fetched from the Hugging Face "
            f"Hub (offline without a cached copy, gated or private without a token, or no such "
            f"model). Tried: {tried}; Hub: {detail}",
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


def load_options(
    *, cuda: bool, quantize_4bit: bool, world: World = SINGLE, fsdp: bool = False
) -> dict[str, Any]:
    """`from_pretrained`'s arguments for the base model (`load_model`)."""
    import torch

    options: dict[str, Any] = {
        "dtype": torch.bfloat16 if cuda else torch.float32,
        "attn_implementation": attention_implementation(),
    }
    if fsdp:
        # No device map: the 4-bit layers quantize on this process's GPU (the current device,
        # `distributed.start`), FSDP shards and places everything.
        options["low_cpu_mem_usage"] = True  # what transformers 5 always does; said for clarity
    elif cuda:
        device = world.local_rank if world.distributed else torch.cuda.current_device()
        options["device_map"] = {"": device}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        # The storage type of the packed 4-bit weights is the compute type (bf16), the dtype
        # of every other weight: FSDP shards them all alike (DDP does not care).
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=torch.bfloat16,
        )
    return options


def load_model(path: str, *, quantize_4bit: bool, world: World = SINGLE, fsdp: bool = False) -> Any:
    """The base model: NF4 4-bit (bf16 compute) or bf16 on CUDA, fp32 on CPU.

    One of several training processes (`world`) loads it onto its own GPU (`cuda:LOCAL_RANK`)
    or, on CPU, with its share of the node's cores. With `fsdp` it is loaded for sharding
    (`load_options`, `distributed.fsdp_config`), the checkpoint read into memory once."""
    import torch
    from transformers import AutoModelForCausalLM

    cuda = has_cuda()
    if fsdp and not cuda:
        raise JobError(FSDP_NEEDS_CUDA, "FsdpNeedsGpu", EXIT_BAD_INPUT)
    if quantize_4bit and not cuda:
        raise JobError(
            "method qlora needs a CUDA GPU (4-bit NF4 via bitsandbytes); none is visible. "
            "Use method lora to train on CPU.",
            "QloraNeedsGpu",
            EXIT_BAD_INPUT,
        )
    kwargs = load_options(cuda=cuda, quantize_4bit=quantize_4bit, world=world, fsdp=fsdp)
    if fsdp:
        from accelerate.utils import enable_fsdp_ram_efficient_loading

        # Read by from_pretrained: only the first process materialises the checkpoint's
        # weights (what the Trainer's fsdp_config `cpu_ram_efficient_loading` sets, but that
        # is built after the model).
        enable_fsdp_ram_efficient_loading()
    elif not cuda:
        # The cores this process may use, not the machine's; shared by the node's processes.
        torch.set_num_threads(world.cpu_threads(usable_cpus()))
    model = load_pretrained(lambda p: AutoModelForCausalLM.from_pretrained(p, **kwargs), path)
    log.info(
        "Loaded base model path=%s quantized_4bit=%s dtype=%s attention=%s device=%s threads=%d",
        path,
        quantize_4bit,
        kwargs["dtype"],
        kwargs["attn_implementation"],
        world.device(cuda) if world.distributed else ("cuda" if cuda else "cpu"),
        torch.get_num_threads(),
    )
    return model
