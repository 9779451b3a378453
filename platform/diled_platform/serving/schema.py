"""The Serve app's request and response schema (pydantic): the limits on every request, the typed
bodies of each endpoint, and the error body of every refusal. FastAPI turns them into the OpenAPI schema
(``/openapi.json``) that clients and the suite's schemathesis run read."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ITEMS = 64          # inputs or latents per request
MAX_TEXT_CHARS = 2000   # characters per text input
MAX_VECTOR_DIM = 4096   # numbers per vector input or latent
# the largest valid body is 64 vectors of 4,096 numbers (~6.5 MB as JSON); anything larger is refused
# before it is read (413)
MAX_BODY_BYTES = 8 * 2**20
MAX_N = 64              # samples per /generate
MAX_NUM = 33            # points per /interpolate
MAX_NEW_TOKENS = 256
MAX_BEAMS = 16  # beams per latent: each costs a decoder pass


# ----------------------------------------------------------------------------- request/response models
class _Strict(BaseModel):
    # NaN and Infinity (which Python's json and many clients emit) are refused like any other bad number
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_VECTOR_DIM)]
# the bounds sit on each member of the union, so that the OpenAPI schema states them (minItems, maxItems):
# pydantic does not write a Field's bounds on a union into the schema, though it enforces them
Inputs = (Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]
          | Annotated[list[Vector], Field(min_length=1, max_length=MAX_ITEMS)])


class DecodeOptions(_Strict):
    """How text is decoded from a latent (ignored by non-text models only at their defaults). ``strategy``,
    ``num_beams`` and ``length_penalty`` unset: the model's saved default decoding (greedy unless it saved
    another, see ``/healthz``'s ``decoding``)."""
    strategy: Literal["greedy", "sample", "beam"] | None = None
    temperature: float = Field(1.0, gt=0, le=10)
    top_k: int = Field(0, ge=0, le=100_000)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    num_beams: int | None = Field(None, ge=1, le=MAX_BEAMS)
    length_penalty: float | None = Field(None, ge=-10, le=10)


class EncodeRequest(_Strict):
    inputs: Inputs


class EncodeResponse(BaseModel):
    latents: list[list[float]]
    latent_dim: int


class ReconstructRequest(DecodeOptions):
    inputs: Inputs | None = None
    latents: list[Vector] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    via: Literal["latent", "inversion"] = "latent"
    steps: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)


Condition = Annotated[str, StringConstraints(min_length=1, max_length=200)] | Annotated[int, Field(ge=0, le=100_000)]
MAX_GUIDANCE = 100.0
MAX_CONDITIONS = 8  # conditions composed in one request (one label each)
# one condition, or several of different labels composed (each with its scale, or one scale for all)
Conditions = Condition | Annotated[list[Condition], Field(min_length=1, max_length=MAX_CONDITIONS)]
Scale = Annotated[float, Field(ge=0, le=MAX_GUIDANCE)]
Scales = Scale | Annotated[list[Scale], Field(min_length=1, max_length=MAX_CONDITIONS)]
MAX_TEMPERATURE = 2.0  # diled.model.MAX_TEMPERATURE (the schema stays free of torch)


class GenerateRequest(DecodeOptions):
    n: int = Field(1, ge=1, le=MAX_N)
    steps: int | None = Field(None, ge=1)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    seed: int | None = Field(None, ge=0, lt=2**63)
    return_latents: bool = False
    # guided generation: a class the model knows (/healthz lists them) and the guidance scale
    condition: Conditions | None = None
    guidance_scale: Scales = 3.0
    # the scale of z_T; None: the model's own (chosen on validation where the job searched for one)
    prior_temperature: float | None = Field(None, gt=0, le=MAX_TEMPERATURE)
    # DDIM's eta (0: deterministic, 1: fresh noise at every step); None: the model's own (sampler ddim only)
    eta: float | None = Field(None, ge=0, le=1)


class EditRequest(DecodeOptions):
    inputs: Inputs
    condition: Conditions
    strength: float = Field(0.5, ge=0, le=1)
    guidance_scale: Scales = 3.0
    steps: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    # judged editing (diled.editing.edit_judged, the model's saved judge): strength and guidance_scale unused;
    # min_similarity in sentence BLEU (judges are saved for text models), 2 as measured on validation
    judged: bool = False
    accept: float = Field(0.8, gt=0, lt=1)
    min_similarity: float | None = Field(2.0, ge=-1e6, le=1e6)


class InterpolateRequest(DecodeOptions):
    a: Text | Vector
    b: Text | Vector
    num: int = Field(5, ge=2, le=MAX_NUM)
    steps: int | None = Field(None, ge=1)
    via: Literal["latent", "inversion"] = "inversion"
    seed: int | None = Field(None, ge=0, lt=2**63)


class OutputsResponse(BaseModel):
    outputs: list[Any]


class GenerateResponse(BaseModel):
    outputs: list[Any]
    seed: int
    latents: list[list[float]] | None = None


class InterpolateResponse(BaseModel):
    alphas: list[float]
    outputs: list[Any]


class ErrorResponse(BaseModel):
    """Every 4xx: ``detail`` says why (a sentence, or the list of fields that failed validation)."""
    detail: str | list[dict[str, Any]]


# documented for every operation, so that clients (and schemathesis) know each refusal the app can give
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a body that cannot be parsed (e.g. JSON nested too deeply)"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key (when the app has one)"},
    413: {"model": ErrorResponse, "description": "body larger than the limit (8 MiB)"},
    415: {"model": ErrorResponse, "description": "body that is not JSON"},
    422: {"model": ErrorResponse, "description": "a request the schema or the model cannot take; says which field"},
}
