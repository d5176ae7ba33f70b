"""VITS inference in PyTorch, as Piper runs it, built from `VitsWeights`.

Two stages, so a batch can be regrouped between them. The text stage (encoder and stochastic duration predictor)
works at phoneme rate and always runs in float32: its durations are rounded up with `ceil`, and a half-precision
rounding that flips one frame would change the output length. The acoustic stage (flow and HiFi-GAN decoder) is
holds nearly all the work; its decoder runs in the engine's dtype, its flow in float32: the decoder amplifies
small changes in its input (measured on joe: flow in float16 -> 1.5-2.3% error in the audio, decoder in float16
-> 0.1-0.2%).

Padding never leaks into an item's audio: every layer that mixes neighbouring positions sees zeros past an item's
end, as in a solo run, so a batched item equals its solo run up to float rounding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (PyTorch's idiom)

from voxserve.engines.vits_weights import ConvSpec, VitsWeights

_LRELU_SLOPE = 0.1
_SPLINE_MIN_BIN = 1e-3
_SPLINE_MIN_DERIVATIVE = 1e-3
_SPLINE_TAIL_BOUND = 5.0


def _conv(weights: VitsWeights, path: str) -> nn.Module:
    """The convolution at `path`, shaped and configured as the graph uses it."""
    weight = torch.from_numpy(weights.tensor(f"{path}.weight"))
    spec: ConvSpec = weights.convs[path]
    bias = weights.tensors.get(f"{path}.bias")
    if spec.transposed:
        channels_in, channels_out, kernel = weight.shape
        conv: nn.Module = nn.ConvTranspose1d(
            channels_in, channels_out * spec.groups, kernel, spec.stride, spec.padding,
            groups=spec.groups, bias=bias is not None, dilation=spec.dilation,
        )  # fmt: skip
    else:
        channels_out, channels_per_group, kernel = weight.shape
        conv = nn.Conv1d(
            channels_per_group * spec.groups, channels_out, kernel, spec.stride, spec.padding, spec.dilation,
            spec.groups, bias=bias is not None,
        )  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return conv


class _LayerNorm(nn.Module):
    """Layer norm over channels of a `[batch, channels, time]` tensor."""

    def __init__(self, weights: VitsWeights, path: str) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.from_numpy(weights.tensor(f"{path}.gamma")))
        self.beta = nn.Parameter(torch.from_numpy(weights.tensor(f"{path}.beta")))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.transpose(1, -1), self.gamma.shape, self.gamma, self.beta, 1e-5).transpose(1, -1)


class _RelativeAttention(nn.Module):
    """Multi-head self-attention with windowed relative position embeddings (keys and values)."""

    def __init__(self, weights: VitsWeights, path: str) -> None:
        super().__init__()
        self.conv_q, self.conv_k, self.conv_v, self.conv_o = (_conv(weights, f"{path}.conv_{name}") for name in "qkvo")
        self.emb_rel_k = nn.Parameter(torch.from_numpy(weights.tensor(f"{path}.emb_rel_k")))
        self.emb_rel_v = nn.Parameter(torch.from_numpy(weights.tensor(f"{path}.emb_rel_v")))
        self.head_channels = self.emb_rel_k.shape[-1]
        self.window = (self.emb_rel_k.shape[1] - 1) // 2

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        batch, channels, length = x.shape
        heads = channels // self.head_channels

        def split_heads(projected: Tensor) -> Tensor:
            return projected.view(batch, heads, self.head_channels, length).transpose(2, 3)

        query = split_heads(self.conv_q(x)) / math.sqrt(self.head_channels)
        key, value = split_heads(self.conv_k(x)), split_heads(self.conv_v(x))
        scores = query @ key.transpose(-2, -1)
        relative_keys = self._relative_embeddings(self.emb_rel_k, length)
        scores = scores + _relative_to_absolute(query @ relative_keys.unsqueeze(0).transpose(-2, -1))
        scores = scores.masked_fill(attention_mask == 0, -1e4)
        weights = F.softmax(scores, dim=-1)
        output = weights @ value
        relative_values = self._relative_embeddings(self.emb_rel_v, length)
        output = output + _absolute_to_relative(weights) @ relative_values.unsqueeze(0)
        return self.conv_o(output.transpose(2, 3).reshape(batch, channels, length))

    def _relative_embeddings(self, embeddings: Tensor, length: int) -> Tensor:
        pad = max(length - (self.window + 1), 0)
        start = max((self.window + 1) - length, 0)
        if pad:
            embeddings = F.pad(embeddings, [0, 0, pad, pad, 0, 0])
        return embeddings[:, start : start + 2 * length - 1]


def _relative_to_absolute(x: Tensor) -> Tensor:
    """`[b, h, l, 2l-1]` relative logits -> `[b, h, l, l]` absolute ones."""
    batch, heads, length, _ = x.shape
    x = F.pad(x, [0, 1]).view(batch, heads, length * 2 * length)
    x = F.pad(x, [0, length - 1])
    return x.view(batch, heads, length + 1, 2 * length - 1)[:, :, :length, length - 1 :]


def _absolute_to_relative(x: Tensor) -> Tensor:
    """`[b, h, l, l]` absolute weights -> `[b, h, l, 2l-1]` relative ones."""
    batch, heads, length, _ = x.shape
    x = F.pad(x, [0, length - 1]).view(batch, heads, length**2 + length * (length - 1))
    x = F.pad(x, [length, 0])
    return x.view(batch, heads, length, 2 * length)[:, :, :, 1:]


class _TextEncoder(nn.Module):
    def __init__(self, weights: VitsWeights) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.from_numpy(weights.tensor("enc_p.emb.weight")))
        layers = weights.count("enc_p.encoder.attn_layers.")
        self.attention = nn.ModuleList(
            _RelativeAttention(weights, f"enc_p.encoder.attn_layers.{i}") for i in range(layers)
        )
        self.norms_1 = nn.ModuleList(_LayerNorm(weights, f"enc_p.encoder.norm_layers_1.{i}") for i in range(layers))
        self.ffn_1 = nn.ModuleList(_conv(weights, f"enc_p.encoder.ffn_layers.{i}.conv_1") for i in range(layers))
        self.ffn_2 = nn.ModuleList(_conv(weights, f"enc_p.encoder.ffn_layers.{i}.conv_2") for i in range(layers))
        self.norms_2 = nn.ModuleList(_LayerNorm(weights, f"enc_p.encoder.norm_layers_2.{i}") for i in range(layers))
        self.proj = _conv(weights, "enc_p.proj")

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hidden states, prior means and prior log-scales, all `[b, c, phonemes]`."""
        hidden = self.embedding.shape[1]
        x = F.embedding(ids, self.embedding).transpose(1, 2) * math.sqrt(hidden) * mask
        attention_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)
        for attention, norm_1, ffn_1, ffn_2, norm_2 in zip(
            self.attention, self.norms_1, self.ffn_1, self.ffn_2, self.norms_2, strict=True
        ):
            x = norm_1(x + attention(x, attention_mask))
            y = ffn_2(_same_pad(torch.relu(ffn_1(_same_pad(x * mask, ffn_1))) * mask, ffn_2)) * mask
            x = norm_2(x + y)
        x = x * mask
        stats = self.proj(x) * mask
        means, log_scales = stats.chunk(2, dim=1)
        return x, means, log_scales


def _same_pad(x: Tensor, conv: nn.Module) -> Tensor:
    """The encoder's feed-forward convolutions are exported unpadded; VITS pads them (k-1)//2 | k//2."""
    kernel = conv.kernel_size[0]
    return F.pad(x, [(kernel - 1) // 2, kernel // 2]) if kernel > 1 else x


class _DilatedDepthSeparableConv(nn.Module):
    def __init__(self, weights: VitsWeights, path: str) -> None:
        super().__init__()
        layers = weights.count(f"{path}.convs_sep.")
        self.separable = nn.ModuleList(_conv(weights, f"{path}.convs_sep.{i}") for i in range(layers))
        self.pointwise = nn.ModuleList(_conv(weights, f"{path}.convs_1x1.{i}") for i in range(layers))
        self.norms_1 = nn.ModuleList(_LayerNorm(weights, f"{path}.norms_1.{i}") for i in range(layers))
        self.norms_2 = nn.ModuleList(_LayerNorm(weights, f"{path}.norms_2.{i}") for i in range(layers))

    def forward(self, x: Tensor, mask: Tensor, condition: Tensor | None = None) -> Tensor:
        if condition is not None:
            x = x + condition
        for separable, pointwise, norm_1, norm_2 in zip(
            self.separable, self.pointwise, self.norms_1, self.norms_2, strict=True
        ):
            y = F.gelu(norm_1(separable(x * mask)))
            x = x + F.gelu(norm_2(pointwise(y)))
        return x * mask


class _ConvFlow(nn.Module):
    """A rational-quadratic spline coupling layer of the duration predictor, run in reverse."""

    def __init__(self, weights: VitsWeights, path: str) -> None:
        super().__init__()
        self.pre = _conv(weights, f"{path}.pre")
        self.convs = _DilatedDepthSeparableConv(weights, f"{path}.convs")
        self.proj = _conv(weights, f"{path}.proj")
        self.bins = (self.proj.out_channels + 1) // 3
        self.filter_channels = self.pre.out_channels

    def forward(self, x: Tensor, mask: Tensor, condition: Tensor) -> Tensor:
        x0, x1 = x.chunk(2, dim=1)
        h = self.proj(self.convs(self.pre(x0), mask, condition)) * mask
        batch, channels, length = x0.shape
        h = h.reshape(batch, channels, -1, length).permute(0, 1, 3, 2)
        scale = math.sqrt(self.filter_channels)
        widths, heights = h[..., : self.bins] / scale, h[..., self.bins : 2 * self.bins] / scale
        x1 = _inverse_spline(x1, widths, heights, h[..., 2 * self.bins :])
        return torch.cat([x0, x1], dim=1) * mask


def _inverse_spline(x: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor) -> Tensor:
    """The inverse of a monotonic rational-quadratic spline on [-B, B] with linear (identity) tails. Computed
    for every element and selected with `where`, so shapes stay static (no boolean indexing)."""
    bound, bins = _SPLINE_TAIL_BOUND, widths.shape[-1]
    edge = math.log(math.exp(1 - _SPLINE_MIN_DERIVATIVE) - 1)
    derivatives = F.pad(derivatives, [1, 1], value=edge)
    derivatives = _SPLINE_MIN_DERIVATIVE + F.softplus(derivatives)

    def knots(unnormalized: Tensor) -> tuple[Tensor, Tensor]:
        sizes = _SPLINE_MIN_BIN + (1 - _SPLINE_MIN_BIN * bins) * F.softmax(unnormalized, dim=-1)
        inner = 2 * bound * torch.cumsum(sizes, dim=-1)[..., :-1] - bound
        cumulative = F.pad(F.pad(inner, [1, 0], value=-bound), [0, 1], value=bound)
        return cumulative, cumulative[..., 1:] - cumulative[..., :-1]

    cum_widths, widths = knots(widths)
    cum_heights, heights = knots(heights)
    search = torch.cat([cum_heights[..., :-1], cum_heights[..., -1:] + 1e-6], dim=-1)
    index = (torch.sum(x[..., None] >= search, dim=-1) - 1).clamp(0, bins - 1)[..., None]

    def pick(values: Tensor) -> Tensor:
        return values.gather(-1, index)[..., 0]

    delta = heights / widths
    bin_delta, bin_height, bin_width = pick(delta), pick(heights), pick(widths)
    bin_cum_height, bin_cum_width = pick(cum_heights), pick(cum_widths)
    d0, d1 = pick(derivatives), pick(derivatives[..., 1:])
    offset = x - bin_cum_height
    slope_sum = d0 + d1 - 2 * bin_delta
    a = offset * slope_sum + bin_height * (bin_delta - d0)
    b = bin_height * d0 - offset * slope_sum
    c = -bin_delta * offset
    root = (2 * c) / (-b - torch.sqrt((b.pow(2) - 4 * a * c).clamp_min(0)))
    inside = (x >= -bound) & (x <= bound)
    return torch.where(inside, root * bin_width + bin_cum_width, x)


class _DurationPredictor(nn.Module):
    """VITS's stochastic duration predictor in reverse: noise (scaled by `noise_w`) -> log durations."""

    def __init__(self, weights: VitsWeights) -> None:
        super().__init__()
        self.pre = _conv(weights, "dp.pre")
        self.convs = _DilatedDepthSeparableConv(weights, "dp.convs")
        self.proj = _conv(weights, "dp.proj")
        self.cond = _conv(weights, "dp.cond") if "dp.cond" in weights.convs else None
        # Reverse order, without the flow VITS drops at inference; Flip layers sit between the spline flows.
        self.flows = nn.ModuleList(
            _ConvFlow(weights, f"dp.flows.{i}") for i in reversed(weights.indices("dp.flows.")) if i > 0
        )
        self.register_buffer("affine_shift", torch.from_numpy(weights.tensor("dp.flows.0.m")))
        self.register_buffer("affine_scale", torch.from_numpy(weights.tensor("dp.flows.0.scale")))

    def forward(self, x: Tensor, mask: Tensor, noise: Tensor, speaker: Tensor | None) -> Tensor:
        x = self.pre(x)
        if self.cond is not None and speaker is not None:
            x = x + self.cond(speaker)
        x = self.proj(self.convs(x, mask)) * mask
        z = noise
        for flow in self.flows:
            z = flow(torch.flip(z, [1]), mask, x)
        z = torch.flip(z, [1])
        z = (z - self.affine_shift) * self.affine_scale * mask
        return z[:, :1]


class _WaveNet(nn.Module):
    def __init__(self, weights: VitsWeights, path: str) -> None:
        super().__init__()
        layers = weights.count(f"{path}.in_layers.")
        self.in_layers = nn.ModuleList(_conv(weights, f"{path}.in_layers.{i}") for i in range(layers))
        self.res_skip = nn.ModuleList(_conv(weights, f"{path}.res_skip_layers.{i}") for i in range(layers))
        self.cond = _conv(weights, f"{path}.cond_layer") if f"{path}.cond_layer" in weights.convs else None
        self.hidden = self.in_layers[0].in_channels

    def forward(self, x: Tensor, mask: Tensor, speaker: Tensor | None) -> Tensor:
        output = torch.zeros_like(x)
        condition = self.cond(speaker) if self.cond is not None and speaker is not None else None
        last = len(self.in_layers) - 1
        for index, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip, strict=True)):
            acts = in_layer(x)
            if condition is not None:
                acts = acts + condition[:, index * 2 * self.hidden : (index + 1) * 2 * self.hidden]
            acts = torch.tanh(acts[:, : self.hidden]) * torch.sigmoid(acts[:, self.hidden :])
            res_skip_acts = res_skip(acts)
            if index < last:
                x = (x + res_skip_acts[:, : self.hidden]) * mask
                output = output + res_skip_acts[:, self.hidden :]
            else:
                output = output + res_skip_acts
        return output * mask


class _CouplingFlow(nn.Module):
    """Mean-only residual coupling layers with channel flips between them, run in reverse."""

    def __init__(self, weights: VitsWeights) -> None:
        super().__init__()
        indices = weights.indices("flow.flows.")
        self.pre = nn.ModuleList(_conv(weights, f"flow.flows.{i}.pre") for i in reversed(indices))
        self.enc = nn.ModuleList(_WaveNet(weights, f"flow.flows.{i}.enc") for i in reversed(indices))
        self.post = nn.ModuleList(_conv(weights, f"flow.flows.{i}.post") for i in reversed(indices))

    def forward(self, z: Tensor, mask: Tensor, speaker: Tensor | None) -> Tensor:
        for pre, enc, post in zip(self.pre, self.enc, self.post, strict=True):
            z = torch.flip(z, [1])
            z0, z1 = z.chunk(2, dim=1)
            means = post(enc(pre(z0) * mask, mask, speaker)) * mask
            z = torch.cat([z0, (z1 - means) * mask], dim=1)
        return z


class _Decoder(nn.Module):
    """HiFi-GAN generator, masking each resolution past an item's length so batching cannot change an item."""

    def __init__(self, weights: VitsWeights) -> None:
        super().__init__()
        self.conv_pre = _conv(weights, "dec.conv_pre")
        self.cond = _conv(weights, "dec.cond") if "dec.cond" in weights.convs else None
        self.ups = nn.ModuleList(_conv(weights, f"dec.ups.{i}") for i in range(weights.count("dec.ups.")))
        blocks = weights.count("dec.resblocks.")
        self.kernels = blocks // len(self.ups)
        # ResBlock1 (high quality) pairs convs1/convs2; ResBlock2 has one conv per step.
        self.resblocks = nn.ModuleList(self._resblock(weights, f"dec.resblocks.{i}") for i in range(blocks))
        self.conv_post = _conv(weights, "dec.conv_post")
        self.hop = math.prod(up.stride[0] for up in self.ups)

    @staticmethod
    def _resblock(weights: VitsWeights, path: str) -> nn.ModuleList:
        if weights.has(f"{path}.convs1."):
            steps = weights.count(f"{path}.convs1.")
            return nn.ModuleList(
                nn.ModuleList([_conv(weights, f"{path}.convs1.{j}"), _conv(weights, f"{path}.convs2.{j}")])
                for j in range(steps)
            )
        return nn.ModuleList(
            nn.ModuleList([_conv(weights, f"{path}.convs.{j}")]) for j in range(weights.count(f"{path}.convs."))
        )

    def forward(self, z: Tensor, frames: Tensor | None, speaker: Tensor | None) -> Tensor:
        """`frames` holds each item's length when they differ (`None`: every item fills the batch)."""
        scale = 1
        x = self.conv_pre(z)
        if self.cond is not None and speaker is not None:
            x = x + self.cond(speaker)
        x = _mask(x, frames, scale)
        for index, up in enumerate(self.ups):
            scale *= up.stride[0]
            x = _mask(up(F.leaky_relu(x, _LRELU_SLOPE)), frames, scale)
            total = None
            for block in self.resblocks[index * self.kernels : (index + 1) * self.kernels]:
                y = x
                for step in block:
                    residual = y
                    for conv in step:
                        y = _mask(conv(F.leaky_relu(y, _LRELU_SLOPE)), frames, scale)
                    y = y + residual
                total = y if total is None else total + y
            x = total / self.kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def _mask(x: Tensor, frames: Tensor | None, scale: int) -> Tensor:
    if frames is None:
        return x
    positions = torch.arange(x.shape[-1], device=x.device)
    return x * (positions[None, :] < frames[:, None] * scale).unsqueeze(1).to(x.dtype)


@dataclass(frozen=True, slots=True)
class TextStageOutput:
    """The phoneme-rate result for a batch: prior statistics and each phoneme's duration in frames."""

    means: Tensor
    log_scales: Tensor
    durations: Tensor

    @property
    def frames(self) -> Tensor:
        return self.durations.sum(dim=1).clamp_min(1)

    def select(self, indices: Tensor) -> TextStageOutput:
        return TextStageOutput(self.means[indices], self.log_scales[indices], self.durations[indices])


class Vits(nn.Module):
    """A Piper VITS voice for inference. `text_stage` then `acoustic_stage`; `hop` samples per frame."""

    def __init__(self, weights: VitsWeights) -> None:
        super().__init__()
        self.encoder = _TextEncoder(weights)
        self.duration_predictor = _DurationPredictor(weights)
        self.flow = _CouplingFlow(weights)
        self.decoder = _Decoder(weights)
        speakers = weights.tensors.get("emb_g.weight")
        self.speaker_embedding = None if speakers is None else nn.Parameter(torch.from_numpy(speakers))
        self.hop = self.decoder.hop
        self.requires_grad_(False)

    def speaker(self, speaker_ids: Tensor) -> Tensor | None:
        if self.speaker_embedding is None:
            return None
        return F.embedding(speaker_ids, self.speaker_embedding).unsqueeze(-1)

    def text_stage(
        self, ids: Tensor, lengths: Tensor, speaker_ids: Tensor, *, noise_w: float, length_scale: float
    ) -> TextStageOutput:
        mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).unsqueeze(1).float()
        hidden, means, log_scales = self.encoder(ids, mask)
        speaker = self.speaker(speaker_ids)
        noise = torch.randn(ids.shape[0], 2, ids.shape[1], device=ids.device) * noise_w
        log_durations = self.duration_predictor(hidden, mask, noise, speaker)
        durations = torch.ceil(torch.exp(log_durations) * mask * length_scale)[:, 0].long()
        return TextStageOutput(means, log_scales, durations)

    @property
    def decoder_dtype(self) -> torch.dtype:
        return self.decoder.conv_post.weight.dtype

    def set_decoder_dtype(self, dtype: torch.dtype) -> None:
        self.decoder.to(dtype)

    def acoustic_stage(self, text: TextStageOutput, speaker_ids: Tensor, *, noise_scale: float) -> Tensor:
        """Float32 audio `[b, longest * hop]`; item `i` ends at `text.frames[i] * hop` samples."""
        z, mask = self.prior_sample(text, noise_scale=noise_scale)
        speaker = self.speaker(speaker_ids)
        z = self.flow_frames(z, mask, speaker)
        frames = text.frames
        uniform = bool((frames == z.shape[-1]).all())
        return self.decode_frames(z, None if uniform else frames, speaker)

    def flow_frames(self, z: Tensor, mask: Tensor, speaker: Tensor | None) -> Tensor:
        """The flow, in reverse, on frames of the prior sample (all, or a window with its context)."""
        return self.flow(z, mask, speaker) * mask

    def decode_frames(self, z: Tensor, frames: Tensor | None, speaker: Tensor | None) -> Tensor:
        """Float32 audio `[b, frames * hop]` from frames of the latent (all, or a window with its context)."""
        dtype = self.decoder_dtype
        speaker = None if speaker is None else speaker.to(dtype)
        return self.decoder(z.to(dtype), frames, speaker)[:, 0].float()

    def prior_sample(self, text: TextStageOutput, *, noise_scale: float) -> tuple[Tensor, Tensor]:
        """`z_p`, the prior's sample expanded to frames `[b, channels, longest]`, and the frame mask
        `[b, 1, longest]`."""
        frames = text.frames
        longest = int(frames.max())
        ends = torch.cumsum(text.durations, dim=1)
        positions = torch.arange(longest, device=ends.device)
        # Frame j belongs to the phoneme whose cumulative duration first exceeds j.
        phoneme = torch.searchsorted(ends, positions.expand(len(ends), -1).contiguous(), right=True)
        phoneme = phoneme.clamp_max(ends.shape[1] - 1).unsqueeze(1)
        channels = text.means.shape[1]
        means = text.means.gather(2, phoneme.expand(-1, channels, -1))
        log_scales = text.log_scales.gather(2, phoneme.expand(-1, channels, -1))
        mask = (positions[None, :] < frames[:, None]).unsqueeze(1).float()
        return (means + torch.randn_like(means) * torch.exp(log_scales) * noise_scale) * mask, mask
