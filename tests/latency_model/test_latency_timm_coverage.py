"""The layer configs carry exactly the dims timm's modules take: listing the layers of two
timm backbones as configs accounts for every one of their parameters. (A check of the
vocabulary, not a model description: those live beside the models, in `prune/`.)"""

import timm

from latency_model import layers as L
from latency_model.features import feature_dict


def _params(configs) -> int:
    return sum(feature_dict(c)["params"] for c in configs)


def test_pvt_v2_b0_is_covered_by_the_configs():
    dims, heads, srs, ratios = (32, 64, 160, 256), (1, 2, 5, 8), (8, 4, 2, 1), (8, 8, 4, 4)
    configs, size, cin = [], 64, 3
    for i, dim in enumerate(dims):
        embed = L.PatchEmbed(size, size, cin, dim, *((7, 4) if i == 0 else (3, 2)))
        size, cin = embed.out_hw[0], dim
        configs.append(embed)
        for _ in range(2):
            configs += [L.LayerNorm(size, size, dim),
                        L.Attention(size, size, dim, heads[i], dim // heads[i], srs[i]),
                        L.LayerNorm(size, size, dim),
                        L.MixFFN(size, size, dim, dim * ratios[i], dim)]
        configs.append(L.LayerNorm(size, size, dim))
    model = timm.create_model("pvt_v2_b0", num_classes=0)
    assert _params(configs) == sum(p.numel() for p in model.parameters())


def test_efficientvit_b0_is_covered_by_the_configs():
    widths, depths, head_dim = (8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16
    configs = [L.ConvNormAct(64, 64, 3, widths[0], 3, 2, act="hardswish")]
    configs += [L.DSConv(32, 32, widths[0], widths[0]) for _ in range(depths[0])]
    size, cin = 32, widths[0]
    for i, (w, d) in enumerate(zip(widths[1:], depths[1:])):
        vit = i >= 2
        down = L.MBConv(size, size, cin, 4 * cin, w, stride=2, fewer_norm=vit, residual=False)
        size, cin = down.out_hw[0], w
        configs.append(down)
        for _ in range(d if vit else d - 1):
            if vit:
                configs.append(L.LiteMLA(size, size, w, w, w // head_dim, head_dim))
            configs.append(L.MBConv(size, size, w, 4 * w, w, fewer_norm=vit))
    model = timm.create_model("efficientvit_b0", num_classes=0)
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head"))
    assert _params(configs) == backbone
