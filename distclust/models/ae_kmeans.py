"""Autoencoder + k-means: pretrain an MLP autoencoder on reconstruction, then
cluster the embeddings with FAISS k-means (gathered from every worker)."""
from __future__ import annotations

import torch

from .autoencoder import AutoencoderModel, KMeansParams, kmeans_prototypes
from .base import Stage



class AEKMeans(AutoencoderModel):
    """MLP autoencoder pretrained on reconstruction, then FAISS k-means on its embeddings."""

    name = "ae-kmeans"
    Params = KMeansParams

    def __init__(self, input_dim, params: KMeansParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self.register_buffer("centroids", torch.zeros(params.n_clusters, params.latent_dim))

    def kmeans_stage(self) -> Stage:
        def run_kmeans(ctx):
            c, inertia = kmeans_prototypes(ctx, self.embed, self.n_clusters, self.params)
            self.centroids.copy_(c)
            self.is_fitted.fill_(True)
            return {"kmeans_inertia": inertia}

        return Stage("kmeans", 0, 0.0, on_start=run_kmeans)

    def stages(self) -> list[Stage]:
        return [self.pretrain_stage(), self.kmeans_stage()]

    def prototypes(self):
        return self.centroids
