"""SW-CLIP, the default objective: spatial soft labels plus neighbourhood-consistency and regional
fairness terms (docs/method.md, "SW-CLIP loss")."""

from __future__ import annotations

from ..losses import LossWeights, spatial_weights, swclip_loss
from .contrastive import CaptionObjective, CaptionTraining, category_codes


class Swclip(CaptionObjective):
    name = "swclip"

    def start(self, training: CaptionTraining) -> None:
        samples, n = training.run.samples, len(training.run.samples)
        regions = samples.get("region")
        if regions is None or regions.isna().all():
            regions = samples.get("city")  # the fairness term needs groups; towns come next
        training.state.update(
            street=category_codes(samples.get("street"), n),
            city=category_codes(samples.get("city"), n),
            region=category_codes(regions, n),
        )

    def loss(self, training, index, img, txt, logits):
        config, device, codes = training.config, training.device, training.state
        kernel = config.kernel
        w = spatial_weights(
            training.lat[index].to(device),
            training.lon[index].to(device),
            scale_m=kernel.scale_m,
            cutoff_m=kernel.cutoff_m,
            kernel=kernel.kernel,
            street=codes["street"][index].to(device),
            city=codes["city"][index].to(device),
            street_bonus=kernel.street_bonus,
            city_bonus=kernel.city_bonus,
        ).float()
        weights = LossWeights(
            lambda_nc=config.lambda_nc,
            lambda_fair=config.lambda_fair,
            nc_temperature=config.nc_temperature,
        )
        return swclip_loss(logits, img, txt, w, codes["region"][index].to(device), weights)


OBJECTIVE = Swclip()
