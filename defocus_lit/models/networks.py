"""The paper's four generators and the conditional PatchGAN discriminator, built from the reference pix2pix blocks.

Every generator is an encoder of 4x4 stride-2 convolutions (LeakyReLU 0.2 before each but the first) and a decoder of
4x4 stride-2 transposed convolutions (ReLU before each, Tanh after the last), with U-Net skips. Arch I with
ngf=64, num_downs=8 is exactly the reference ``UnetGenerator`` (U-Net-256). The reference blocks apply their
activations in place, so its skips carry LeakyReLU(x), which the decoder's ReLU turns into ReLU(x): the same as
concatenating the raw encoder features here, so the numbers match.

Generators take ``image (B,3,H,W) in [-1,1]`` and ``mask (B,M,H,W) in [0,1]`` and return ``(B,3,H,W) in [-1,1]``;
H and W must be multiples of ``2**num_downs``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from defocus_lit.errors import UserError

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "instance": partial(nn.InstanceNorm2d, affine=False, track_running_stats=False),
}
DROPOUT_BLOCKS = 3  # up blocks right after the innermost that get Dropout(0.5); the reference has num_downs-5 (3 at 8)


def _norm(norm: str) -> Callable[[int], nn.Module]:
    if norm not in NORMS:
        raise UserError(f"model.norm: unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    return NORMS[norm]


def init_weights(net: nn.Module, std: float = 0.02) -> nn.Module:
    """Reference pix2pix init: conv weights N(0, std), batch-norm weights N(1, std), biases 0. Returns ``net``."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return net


def down_block(
    in_ch: int, out_ch: int, norm: str, *, outermost: bool = False, innermost: bool = False
) -> nn.Sequential:
    """Encoder step, halves H and W: [LeakyReLU 0.2] -> Conv 4x4/2 -> [norm] (no activation first, no norm last)."""
    layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=norm == "instance"))
    if not (outermost or innermost):
        layers.append(_norm(norm)(out_ch))
    return nn.Sequential(*layers)


def up_block(in_ch: int, out_ch: int, norm: str, *, outermost: bool = False, dropout: bool = False) -> nn.Sequential:
    """Decoder step, doubles H and W: ReLU -> ConvTranspose 4x4/2 -> norm [-> Dropout 0.5]; Tanh instead of norm
    when outermost."""
    layers: list[nn.Module] = [
        nn.ReLU(True),
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=outermost or norm == "instance"),
        nn.Tanh() if outermost else _norm(norm)(out_ch),
    ]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


def _widths(ngf: int, num_downs: int) -> list[int]:
    """Encoder output channels per level: ngf, 2ngf, 4ngf, then 8ngf down to the bottleneck."""
    if num_downs < 2:
        raise UserError(f"model.num_downs: must be at least 2, got {num_downs}")
    return [ngf * min(2**i, 8) for i in range(num_downs)]


def check_size(x: Tensor, num_downs: int) -> None:
    """Raise ValueError unless H and W of ``x`` (B,C,H,W) are multiples of 2**num_downs."""
    h, w = x.shape[-2:]
    multiple = 2**num_downs
    if h % multiple or w % multiple:
        raise ValueError(
            f"input size {h}x{w} is not a multiple of {multiple} (2**num_downs, num_downs={num_downs}); "
            f"pad H and W to multiples of {multiple}"
        )


class Encoder(nn.Module):
    """Stack of down blocks; returns every level's features, finest first, the last being the bottleneck."""

    def __init__(self, in_ch: int, widths: list[int], norm: str):
        super().__init__()
        chans = [in_ch, *widths]
        last = len(widths) - 1
        self.blocks = nn.ModuleList(
            down_block(chans[i], chans[i + 1], norm, outermost=i == 0, innermost=i == last) for i in range(len(widths))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """Up blocks from the bottleneck to the output; block k's input is cat(skip k, previous output) (reference order).

    ``skip_factor`` / ``bottleneck_factor``: how many encoders' features each skip / the bottleneck concatenates.
    ``global_context``: every bottleneck cell also gets the whole image's mean bottleneck features, so how much blur
    a region gets can depend on the scene as a whole (its layout, its scale), at any input size.
    """

    def __init__(
        self,
        widths: list[int],
        norm: str,
        dropout: bool,
        *,
        out_ch: int = 3,
        skip_factor: int = 1,
        bottleneck_factor: int = 1,
        global_context: bool = False,
    ):
        super().__init__()
        n = len(widths)
        self.global_context = global_context
        blocks = [up_block(widths[-1] * bottleneck_factor * (1 + global_context), widths[-2], norm)]
        for k in range(n - 2, 0, -1):  # level k: decoder output widths[k] + skip widths[k] * skip_factor
            use_dropout = dropout and n - 1 - k <= DROPOUT_BLOCKS
            blocks.append(up_block(widths[k] * (1 + skip_factor), widths[k - 1], norm, dropout=use_dropout))
        blocks.append(up_block(widths[0] * (1 + skip_factor), out_ch, norm, outermost=True))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, bottleneck: Tensor, skips: list[Tensor]) -> Tensor:
        """``skips`` finest first (encoder order, without the bottleneck)."""
        if self.global_context:
            scene = bottleneck.mean((2, 3), keepdim=True).expand_as(bottleneck)
            bottleneck = torch.cat([bottleneck, scene], 1)
        x = self.blocks[0](bottleneck)
        for block, skip in zip(self.blocks[1:], reversed(skips)):
            x = block(torch.cat([skip, x], 1))
        return x


class UNetGenerator(nn.Module):
    """Arch I (``pix2pix_4ch``): the reference U-Net on cat(image, mask); also both stages of arch IV."""

    def __init__(
        self,
        in_channels: int = 4,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: bool = True,
        out_channels: int = 3,
        global_context: bool = False,
    ):
        super().__init__()
        self.num_downs = num_downs
        widths = _widths(ngf, num_downs)
        self.encoder = Encoder(in_channels, widths, norm)
        self.decoder = Decoder(widths, norm, dropout, out_ch=out_channels, global_context=global_context)
        init_weights(self)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        check_size(image, self.num_downs)
        feats = self.encoder(torch.cat([image, mask], 1))
        return self.decoder(feats[-1], feats[:-1])


class DualEncoderGenerator(nn.Module):
    """Arch II (``dual_encoder``) and III (``dual_skip``): separate image and mask encoders, one decoder.

    The encoders are fused by concatenation at the bottleneck. Skips carry the image encoder's features (II) or
    cat(image features, mask features) at every scale (III, ``mask_skips=True``).
    """

    def __init__(
        self,
        mask_channels: int = 1,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: bool = True,
        mask_skips: bool = False,
        out_channels: int = 3,
        global_context: bool = False,
    ):
        super().__init__()
        self.num_downs = num_downs
        self.mask_skips = mask_skips
        widths = _widths(ngf, num_downs)
        self.image_encoder = Encoder(3, widths, norm)
        self.mask_encoder = Encoder(mask_channels, widths, norm)
        skip_factor = 2 if mask_skips else 1
        self.decoder = Decoder(
            widths,
            norm,
            dropout,
            out_ch=out_channels,
            skip_factor=skip_factor,
            bottleneck_factor=2,
            global_context=global_context,
        )
        init_weights(self)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        check_size(image, self.num_downs)
        img, msk = self.image_encoder(image), self.mask_encoder(mask)
        skips = [torch.cat(pair, 1) for pair in zip(img[:-1], msk[:-1])] if self.mask_skips else img[:-1]
        return self.decoder(torch.cat([img[-1], msk[-1]], 1), skips)


class TwoStageGenerator(nn.Module):
    """Arch IV (``two_stage``), after Ma et al. 2017: G1 makes a coarse defocus from image + mask; G2, a U-Net on
    cat(image, coarse image) + mask, predicts a residual that is added to G1's output and clamped to [-1,1]."""

    def __init__(
        self,
        mask_channels: int = 1,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: bool = True,
        out_channels: int = 3,
        global_context: bool = False,
    ):
        super().__init__()
        self.g1 = UNetGenerator(3 + mask_channels, ngf, num_downs, norm, dropout, out_channels, global_context)
        self.g2 = UNetGenerator(6 + mask_channels, ngf, num_downs, norm, dropout, out_channels, global_context)

    def stages(
        self, image: Tensor, mask: Tensor, finish: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """(coarse image, refined output) (B,C,H,W) in [-1,1]. `finish` turns a raw output into an image (an output
        head, keep-focus); G2 sees G1's finished image, and the refined output is returned raw, for `finish` too."""
        raw = self.g1(image, mask)
        coarse = finish(raw) if finish is not None else raw
        return coarse, (raw + self.g2(torch.cat([image, coarse], 1), mask)).clamp(-1.0, 1.0)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.stages(image, mask)[1]


GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "pix2pix_4ch": lambda mask_channels, **kw: UNetGenerator(3 + mask_channels, **kw),
    "dual_encoder": partial(DualEncoderGenerator, mask_skips=False),
    "dual_skip": partial(DualEncoderGenerator, mask_skips=True),
    "two_stage": TwoStageGenerator,
}


def build_generator(
    arch: str,
    *,
    mask_channels: int = 1,
    ngf: int = 64,
    num_downs: int = 8,
    norm: str = "batch",
    dropout: bool = True,
    out_channels: int = 3,
    global_context: bool = False,
) -> nn.Module:
    """One of the paper's generators, initialised N(0, 0.02); forward(image, mask) -> (B,out_channels,H,W) in
    [-1,1] (an image with the default 3 channels). `global_context`: see `Decoder`."""
    if arch not in GENERATORS:
        raise UserError(f"arch: unknown architecture {arch!r}; valid: {', '.join(GENERATORS)}")
    return GENERATORS[arch](
        mask_channels=mask_channels,
        ngf=ngf,
        num_downs=num_downs,
        norm=norm,
        dropout=dropout,
        out_channels=out_channels,
        global_context=global_context,
    )


class PatchDiscriminator(nn.Module):
    """The reference conditional PatchGAN (``NLayerDiscriminator``; 70x70 receptive field with n_layers=3).

    forward(x (B,in_channels,H,W) = cat(image, mask, output)) -> patch logits (B,1,h,w).
    """

    def __init__(self, in_channels: int = 7, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        use_bias = norm == "instance"
        chans = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers + 1):  # stride 2 except the last, as the reference
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(chans[i - 1], chans[i], 4, stride=stride, padding=1, bias=use_bias),
                _norm(norm)(chans[i]),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(chans[-1], 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def build_discriminator(
    in_channels: int = 7, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
) -> PatchDiscriminator:
    """The conditional PatchGAN on cat(image (3), mask (M), output (3)): in_channels = 6 + M."""
    return PatchDiscriminator(in_channels, ndf, n_layers, norm)
