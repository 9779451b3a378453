"""Activation checkpointing in the text decoder: the same loss and gradients, fewer saved activations,
and the latent memory still reaches every recomputed block."""

import pytest
import torch

from diled.codecs.text import TextCodec, train_bpe

SENTENCES = [
    "a three-hour cinema master class.", "the movie was bad and boring.", "what a great film, i loved it.",
    "self-driving cars just seem lazy.", "i just don't trust my life in their hands.",
    "the acting is wooden and the plot is thin.",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return str(train_bpe(SENTENCES * 5, 300, tmp_path_factory.mktemp("tok")))


def make(kind, tokenizer_dir, checkpointing):
    torch.manual_seed(0)
    if kind == "gpt2":
        return TextCodec(latent_dim=8, tokenizer=tokenizer_dir, max_length=20, activation_checkpointing=checkpointing,
                         decoder_config={"n_layer": 3, "n_embd": 32, "n_head": 2, "n_positions": 32})
    return TextCodec(latent_dim=8, decoder_kind="bert", decoder_layers=2, encoder_layers=1, max_length=20,
                     activation_checkpointing=checkpointing)


def loss_grads_and_saved_bytes(codec, batch):
    codec.train()  # dropout on: checkpoint's RNG replay must give the same masks
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(1)
    z = codec.encode(batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = codec.reconstruction_loss(batch, z).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in codec.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(saved)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_checkpointing_gives_the_same_loss_and_gradients_and_saves_fewer_activations(kind, tokenizer_dir):
    plain, ckpt = make(kind, tokenizer_dir, False), make(kind, tokenizer_dir, True)
    batch = plain.collate(SENTENCES)
    loss0, grads0, bytes0 = loss_grads_and_saved_bytes(plain, batch)
    loss1, grads1, bytes1 = loss_grads_and_saved_bytes(ckpt, batch)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=1e-6)
    assert grads1.keys() == grads0.keys()
    # the latent-memory connector's gradient comes through every recomputed block
    assert grads1["latent_to_memory.weight"].abs().sum() > 0
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-6, msg=name)
    assert bytes1 < 0.8 * bytes0, (bytes1, bytes0)
    assert ckpt.activation_checkpointing and ckpt.get_config()["activation_checkpointing"] is True


def test_checkpointing_can_be_switched_and_does_not_touch_decoding(tokenizer_dir):
    codec = make("gpt2", tokenizer_dir, True).eval()
    z = torch.randn(2, 8)
    a = codec.decode_ids(z, max_new_tokens=8)
    codec.set_activation_checkpointing(False)
    assert not any(b.gradient_checkpointing for b in codec.decoder_blocks())
    assert codec.decode_ids(z, max_new_tokens=8) == a
