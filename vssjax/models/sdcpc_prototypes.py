"""MCP-CL: multivariate class prototypes with contrastive learning (SD-CPC, training only).

Paper (specs/sdcpc.md §2.1, abstract and Fig. 2 caption only): several prototypes per class are
obtained from the prediction results and the output features, and contrastive learning against
them gives "personalized inter-class" and "diversified intra-class" features. A third-party summary
says only correctly predicted pixels form the prototypes [SECONDARY].

Reconstruction (spec §6.3, [GUESS]; all knobs in `config.method.mcp`): on the target frames of a
batch, the pixels predicted as class c (and, with `prototype_pixels='correct'`, labelled c) are
split into K groups by a few spherical k-means steps, started from K contiguous runs of them in
raster order; the K group means, re-normalised, are c's prototypes. The assignments carry no
gradient (spec §6.3); the means do only with `prototype_gradient=True`. Off by default: the
prototypes are then fixed targets for the step, as in prototype methods that update them
without back-propagation, and the loss shapes each pixel's embedding only through that pixel.
Each labelled pixel (at most `max_pixels_per_class` per class, drawn at random) is pulled towards
the prototypes of its class and pushed from those of every other class by a multi-positive
InfoNCE with temperature tau:
  l(p) = -log( sum_k exp(e_p . m_{c,k} / tau) / sum_{c', k} exp(e_p . m_{c',k} / tau) ),
over the classes that have prototypes in the batch. Being pulled towards the nearest of several
prototypes rather than one mean keeps a class's features diverse.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipelines.sources.base import IGNORE_LABEL
from vssjax.models.layers import l2_normalize
from vssjax.ops.resize import resize_nearest

PROTOTYPE_PIXELS = ("predicted", "correct")


def rank_within_class(classes: jax.Array, order: jax.Array) -> jax.Array:
  """For every element of `classes` [N], how many elements of its class come before it when the
  class is sorted by `order` [N] (ties keep index order)."""
  num = classes.shape[0]
  by_class = jnp.lexsort((jnp.arange(num), order, classes))
  sorted_classes = classes[by_class]
  first = jnp.searchsorted(sorted_classes, sorted_classes, side="left")
  return jnp.zeros(num, jnp.int32).at[by_class].set(jnp.arange(num, dtype=jnp.int32) - first)


def sample_per_class(labels: jax.Array, max_per_class: int, rng: jax.Array) -> jax.Array:
  """Bool [N]: a uniformly random subset of at most `max_per_class` elements of every label."""
  return rank_within_class(labels, jax.random.uniform(rng, labels.shape)) < max_per_class


def class_prototypes(embeddings: jax.Array, classes: jax.Array, num_classes: int,
                     num_prototypes: int, kmeans_iters: int, *,
                     gradient: bool = False) -> tuple[jax.Array, jax.Array]:
  """K prototypes per class from unit embeddings [N, D] and their classes [N] (-1: none).

  Returns (prototypes [C, K, D], unit vectors; present [C], whether the class has any pixel). A
  group left empty (a class with fewer than K pixels) takes the class mean. The k-means
  assignments never carry gradient; the prototypes (their groups' means) do with `gradient`.
  """
  embeddings = embeddings.astype(jnp.float32)
  points = jax.lax.stop_gradient(embeddings)
  k = num_prototypes
  member = (classes >= 0) & (classes < num_classes)
  safe = jnp.where(member, classes, 0)
  segments = num_classes * k + 1  # the last segment collects the non-members

  def centres(groups, points=points):
    ids = jnp.where(member, safe * k + groups, num_classes * k)
    sums = jax.ops.segment_sum(points, ids, segments)[:-1].reshape((num_classes, k, -1))
    counts = jax.ops.segment_sum(jnp.ones_like(ids), ids, segments)[:-1].reshape((num_classes, k))
    class_sums = sums.sum(axis=1, keepdims=True)
    return l2_normalize(jnp.where(counts[..., None] > 0, sums, class_sums))

  counts = jax.ops.segment_sum(member.astype(jnp.int32), safe, num_classes)
  # Start: K contiguous runs of each class's pixels in raster order (spatially distinct parts).
  rank = rank_within_class(jnp.where(member, safe, -1), jnp.zeros_like(classes))
  groups = (rank * k) // jnp.maximum(counts[safe], 1)
  prototypes = centres(groups)
  for _ in range(kmeans_iters):
    groups = jnp.argmax(jnp.einsum("nd,nkd->nk", points, prototypes[safe]), axis=-1)
    prototypes = centres(groups)
  if gradient:
    prototypes = centres(groups, embeddings)  # the same values, differentiable in the embeddings
  return prototypes, counts > 0


def prototype_contrastive_loss(embeddings: jax.Array, labels: jax.Array, prototypes: jax.Array,
                               present: jax.Array, temperature: float,
                               weights: jax.Array) -> jax.Array:
  """Mean multi-positive InfoNCE of unit embeddings [N, D] labelled [N] against prototypes
  [C, K, D] of the `present` classes, over the anchors with `weights` [N] whose class is present."""
  num_classes = prototypes.shape[0]
  valid = (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)
  logits = jnp.einsum("nd,ckd->nck", embeddings.astype(jnp.float32), prototypes) / temperature
  logits = jnp.where(present[None, :, None], logits, jnp.finfo(jnp.float32).min)
  positives = jnp.take_along_axis(logits, safe[:, None, None], axis=1)[:, 0]
  per_pixel = (jax.nn.logsumexp(logits, axis=(1, 2))
               - jax.nn.logsumexp(positives, axis=-1))
  used = (weights & valid & present[safe]).astype(jnp.float32)
  return jnp.sum(used * per_pixel) / jnp.maximum(used.sum(), 1.0)


def mcp_cl_loss(embedding: jax.Array, logits: jax.Array, labels: jax.Array, rng: jax.Array, *,
                num_prototypes: int, temperature: float, kmeans_iters: int,
                prototype_pixels: str, max_pixels_per_class: int,
                prototype_gradient: bool = False, ignore_label: int = IGNORE_LABEL) -> jax.Array:
  """MCP-CL on a batch of target frames: embedding [B, h, w, D] (unit), logits [B, h, w, C] on the
  same grid, labels [B, H, W] (nearest-downsampled to the grid)."""
  if prototype_pixels not in PROTOTYPE_PIXELS:
    raise ValueError(f"prototype_pixels must be one of {PROTOTYPE_PIXELS}, got "
                     f"{prototype_pixels!r}")
  num_classes = logits.shape[-1]
  labels = resize_nearest(labels, embedding.shape[1:3]).reshape(-1)
  labels = jnp.where(labels == ignore_label, -1, labels)
  predicted = jnp.argmax(logits, axis=-1).reshape(-1)
  if prototype_pixels == "correct":
    predicted = jnp.where(predicted == labels, predicted, -1)
  embedding = embedding.reshape((-1, embedding.shape[-1]))
  prototypes, present = class_prototypes(embedding, predicted, num_classes, num_prototypes,
                                         kmeans_iters, gradient=prototype_gradient)
  weights = sample_per_class(labels, max_pixels_per_class, rng)
  return prototype_contrastive_loss(embedding, labels, prototypes, present, temperature, weights)
