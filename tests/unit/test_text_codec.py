"""The text codec against Hugging Face's GPT-2, its KV-cache decoding, freezing, saving and learning."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from diled import DiLED, LatentDiffusion, MLPSkipNet
from diled.codecs.text import TextCodec, train_bpe

SENTENCES = [
    "a three-hour cinema master class.", "the movie was bad and boring.", "what a great film, i loved it.",
    "self-driving cars just seem lazy.", "i just don't trust my life in their hands.",
    "the acting is wooden and the plot is thin.", "a warm, funny and moving story.",
    "the flight was late again and nobody told us.", "best customer service i have had in years.",
    "it drags on far too long.", "a clever script with sharp dialogue.", "my bag was lost on the way home.",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return str(train_bpe(SENTENCES * 5, 400, tmp_path_factory.mktemp("tok")))


def make_codec(tokenizer_dir, **kw):
    torch.manual_seed(0)
    args = dict(latent_dim=8, tokenizer=tokenizer_dir, max_length=24,
                decoder_config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32})
    args.update(kw)
    return TextCodec(**args)


def test_without_latent_the_decoder_is_exactly_hugging_face_gpt2(tokenizer_dir):
    codec = make_codec(tokenizer_dir).eval()
    batch = codec.collate(SENTENCES[:5])
    ids, mask = batch["dec_ids"], batch["dec_mask"]
    plain = GPT2LMHeadModel(codec.decoder.config).eval()
    plain.load_state_dict(codec.decoder.state_dict())
    with torch.no_grad():
        ours = codec.decoder_logits(ids, mask, None)
        ref = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # with both latent paths switched off, a latent changes nothing either
    off = make_codec(tokenizer_dir, latent_memory=False, latent_embedding=False).eval()
    off.decoder.load_state_dict(codec.decoder.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(off.decoder_logits(ids, mask, torch.randn(5, 8)), ref, rtol=0, atol=1e-5)


def test_latent_enters_through_memory_and_embedding(tokenizer_dir):
    codec = make_codec(tokenizer_dir).eval()
    batch = codec.collate(SENTENCES[:3])
    z = torch.randn(3, 8)
    with torch.no_grad():
        base = codec.decoder_logits(batch["dec_ids"], batch["dec_mask"], z)
        for kw in ({"latent_memory": False}, {"latent_embedding": False}):
            other = make_codec(tokenizer_dir, **kw).eval()
            other.load_state_dict(codec.state_dict())
            assert (other.decoder_logits(batch["dec_ids"], batch["dec_mask"], z) - base).abs().max() > 1e-4
    codec.train()
    codec.reconstruction_loss(batch, z.requires_grad_()).sum().backward()
    assert codec.latent_to_memory.weight.grad.abs().sum() > 0
    assert codec.latent_to_embedding.weight.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0


def test_kv_cache_greedy_decoding_equals_recomputing_everything(tokenizer_dir):
    codec = make_codec(tokenizer_dir).eval()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    fast = codec.decode(z, max_new_tokens=12)
    # naive: re-run the whole prefix every step, no cache
    ids = torch.full((4, 1), codec.bos_id)
    with torch.no_grad():
        for _ in range(12):
            logits = codec.decoder_logits(ids, torch.ones_like(ids), z)[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    naive = []
    for row in ids[:, 1:].tolist():
        row = row[: row.index(codec.eos_id)] if codec.eos_id in row else row
        naive.append(codec.tokenizer.decode(row, skip_special_tokens=True).strip())
    assert fast == naive


def test_sampling_options(tokenizer_dir):
    codec = make_codec(tokenizer_dir).eval()
    z = torch.randn(3, 8)
    a = codec.decode(z, strategy="sample", top_k=5, top_p=0.9, temperature=0.8, generator=torch.Generator().manual_seed(1))
    b = codec.decode(z, strategy="sample", top_k=5, top_p=0.9, temperature=0.8, generator=torch.Generator().manual_seed(1))
    assert a == b and len(a) == 3
    with pytest.raises(ValueError, match="top_p"):
        codec.decode(z, strategy="sample", top_p=0)
    with pytest.raises(ValueError, match="'nucleus'"):
        codec.decode(z, strategy="nucleus")


def _has_repeated_ngram(ids, n):
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


def test_no_repeat_ngram_blocks_repeats(tokenizer_dir):
    codec = make_codec(tokenizer_dir).eval()
    z = torch.randn(4, 8)
    plain = codec.decode_ids(z)
    assert any(_has_repeated_ngram(s, 2) for s in plain)      # an untrained greedy decoder loops
    blocked = codec.decode_ids(z, no_repeat_ngram=2)
    assert all(len(s) >= 4 for s in blocked)
    assert not any(_has_repeated_ngram(s, 2) for s in blocked)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        codec.decode(z, no_repeat_ngram=-1)


def test_example_lengths_are_the_collated_token_counts(tokenizer_dir):
    codec = make_codec(tokenizer_dir)
    texts = SENTENCES[:5] + [" ".join(SENTENCES)]                     # the last one is truncated
    batch = codec.collate(texts)
    assert [n + 2 for n in codec.example_lengths(texts)] == batch["dec_mask"].sum(1).tolist()  # + BOS, EOS


def test_freezing(tokenizer_dir):
    codec = make_codec(tokenizer_dir, encoder_trainable_layers=2, decoder_trainable="paper")
    enc_layers = codec.encoder.encoder.layer
    assert not any(p.requires_grad for layer in enc_layers[:-2] for p in layer.parameters())
    assert all(p.requires_grad for layer in enc_layers[-2:] for p in layer.parameters())
    assert not any(p.requires_grad for p in codec.encoder.embeddings.parameters())
    tr = codec.decoder.transformer
    assert all(p.requires_grad for p in tr.wte.parameters()) and all(p.requires_grad for p in tr.h[0].parameters())
    assert not any(p.requires_grad for p in tr.h[1].parameters())
    assert all(p.requires_grad for p in codec.latent_to_memory.parameters())
    assert all(p.requires_grad for p in codec.to_latent.parameters())


def test_a_truncated_encoder_keeps_its_first_layers_and_saves(tokenizer_dir, tmp_path):
    full = make_codec(tokenizer_dir)
    codec = make_codec(tokenizer_dir, encoder_layers=3, encoder_trainable_layers=1)
    layers = codec.encoder.encoder.layer
    assert len(layers) == 3 == codec.encoder.config.num_hidden_layers
    torch.testing.assert_close(layers[2].state_dict(), full.encoder.encoder.layer[2].state_dict())
    assert [any(p.requires_grad for p in layer.parameters()) for layer in layers] == [False, False, True]
    model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=1, time_dim=8), LatentDiffusion("constant", 10)).eval()
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert len(loaded.codec.encoder.encoder.layer) == 3
    torch.testing.assert_close(model.encode(SENTENCES[:3]), loaded.encode(SENTENCES[:3]))
    with pytest.raises(ValueError, match=r"encoder_layers must be -1 or in 1..6"):
        make_codec(tokenizer_dir, encoder_layers=7)


def test_bad_examples_get_a_clear_error(tokenizer_dir):
    codec = make_codec(tokenizer_dir)
    with pytest.raises(ValueError, match=r"example\(s\) \[1\] are empty"):
        codec.collate(["fine", "   "])
    with pytest.raises(ValueError, match="no examples"):
        codec.collate([])
    long = " ".join(["word"] * 500)  # truncated to max_length, never an error
    assert codec.collate([long])["dec_ids"].shape[1] <= codec.max_length + 1


def tiny_text_model(tokenizer_dir, w=1.0):
    codec = make_codec(tokenizer_dir, encoder_trainable_layers=1)
    return DiLED(codec, MLPSkipNet(8, hidden=32, depth=2, time_dim=16), LatentDiffusion("constant", 100), w=w)


def test_save_and_load(tokenizer_dir, tmp_path):
    model = tiny_text_model(tokenizer_dir).eval()
    path = model.save_pretrained(tmp_path / "m")
    assert (path / "decoder_tokenizer").is_dir() and (path / "encoder" / "config.json").is_file()
    loaded = DiLED.from_pretrained(path)
    torch.testing.assert_close(model.encode(SENTENCES[:3]), loaded.encode(SENTENCES[:3]))
    assert model.generate(3, steps=5, seed=0) == loaded.generate(3, steps=5, seed=0)


def test_a_bf16_model_saves_16_bit_and_loads_as_fp32(tokenizer_dir, tmp_path):
    # a bf16 training run's export: its encoder's saved Hugging Face config says bfloat16, which
    # transformers would build the encoder in while the rest of the model is fp32
    model = tiny_text_model(tokenizer_dir).to(torch.bfloat16).eval()
    model.codec.encoder.config.dtype = torch.bfloat16  # as DeepSpeed's bf16 zero.Init leaves it
    path = model.save_pretrained(tmp_path / "m")
    assert '"dtype": "bfloat16"' in (path / "encoder" / "config.json").read_text()
    loaded = DiLED.from_pretrained(path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    z = loaded.encode(SENTENCES[:3])
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, model.encode(SENTENCES[:3]).float(), rtol=0.05, atol=0.05)
    assert {p.dtype for p in DiLED.from_pretrained(path, dtype=torch.bfloat16).parameters()} == {torch.bfloat16}


def test_reconstruction_improves_and_generation_comes_from_the_decoder(tokenizer_dir):
    model = tiny_text_model(tokenizer_dir)
    batch = model.codec.collate(SENTENCES)

    def rec_and_acc():
        model.eval()
        with torch.no_grad():
            z0 = model.encode(batch)
            return model.codec.reconstruction_loss(batch, z0).mean().item(), model.codec.token_accuracy(batch, z0).mean().item()

    rec0, acc0 = rec_and_acc()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(150):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    rec1, acc1 = rec_and_acc()
    assert rec1 < 0.5 * rec0, (rec0, rec1)          # nats per token, measured ~6.0 -> ~1
    assert acc1 > acc0 + 0.3, (acc0, acc1)          # teacher-forced token accuracy

    # the job's reconstruction scores, against the same with another sentence's latent (batches of 5: the
    # other latent also comes from across a batch boundary)
    from diled_platform.datatypes.text import reconstruct_texts

    model.eval()
    with torch.no_grad():
        recons, scores = reconstruct_texts(model, SENTENCES, batch_size=5)
    assert len(recons) == len(SENTENCES) and scores["reconstruction_token_accuracy"] == pytest.approx(acc1)
    # teacher forcing lets a decoder that has memorised 12 sentences follow any prefix (~0.89 with another
    # latent, ~0.94 with its own); greedy decoding from the latent alone cannot (BLEU ~24 against ~1)
    assert scores["reconstruction_token_accuracy"] > scores["reconstruction_token_accuracy_other_latent"], scores
    assert scores["reconstruction_bleu"] > scores["reconstruction_bleu_other_latent"] + 10, scores
    with torch.no_grad():  # one sentence has no other latent: no floor rather than its own score
        _, alone = reconstruct_texts(model, SENTENCES[:1])
    assert "reconstruction_bleu_other_latent" not in alone and "reconstruction_bleu" in alone

    # generation: latents from the prior, decoded token by token by the GPT-2 decoder
    calls = []
    hook = model.codec.decoder.register_forward_hook(lambda *a: calls.append(1))
    samples = model.generate(6, steps=10, seed=0)
    hook.remove()
    assert len(samples) == 6 and calls
    assert samples == model.codec.decode(model.sample_latents(6, steps=10, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():  # a different decoder gives different text from the same latents
        model.codec.decoder.lm_head.weight.mul_(-1)
    assert model.generate(6, steps=10, seed=0) != samples


# ----------------------------------------------------------------- latent slots
def test_latent_slots_pool_stretches_of_the_sentence(tokenizer_dir):
    codec = make_codec(tokenizer_dir, latent_slots=4, slot_tokens=3).eval()
    text = "the movie was bad and boring."
    batch = codec.collate([text, "it drags."])
    # each word piece's slot is that of the decoder token holding its first character, // slot_tokens
    dec = codec.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    enc = codec.enc_tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    expected = [-1 if b == a else min(next(k for k, (s, e) in enumerate(dec) if s <= a < e) // 3, 3)
                for a, b in enc]
    assert batch["enc_slot"][0, :len(enc)].tolist() == expected
    assert set(expected[1:-1]) == {0, 1, 2, 3} and batch["enc_slot"][1, len(enc):].eq(-1).all()
    with torch.no_grad():
        z = codec.encode(batch).view(2, 4, 2)
    # "it drags." is shorter than the four slots: the slots after it are empty, and an empty slot is the map's bias
    used = set(batch["enc_slot"][1].tolist()) - {-1}
    empty = sorted(set(range(4)) - used)
    assert 0 in used and empty and max(used) < min(empty)
    torch.testing.assert_close(z[1, empty], codec.to_latent.bias.expand(len(empty), 2))


def test_a_slot_is_read_where_its_tokens_are_predicted(tokenizer_dir):
    codec = make_codec(tokenizer_dir, latent_slots=4, slot_tokens=3, latent_memory=False).eval()
    batch = codec.collate(SENTENCES[:2])
    ids, mask = batch["dec_ids"], batch["dec_mask"]
    z = torch.randn(2, 8)
    moved = z.clone().view(2, 4, 2)
    moved[:, 1] += 1.0  # slot 1: the tokens at input positions 3, 4 and 5
    with torch.no_grad():
        a, b = codec.decoder_logits(ids, mask, z), codec.decoder_logits(ids, mask, moved.view(2, 8))
    changed = (a - b).abs().amax(dim=(0, 2)) > 1e-5
    assert not changed[:3].any() and changed[3:6].all()  # causal: later positions may change through attention
    # with the memory on, every position sees every slot
    codec = make_codec(tokenizer_dir, latent_slots=4, slot_tokens=3).eval()
    with torch.no_grad():
        a, b = codec.decoder_logits(ids, mask, z), codec.decoder_logits(ids, mask, moved.view(2, 8))
    assert ((a - b).abs().amax(dim=(0, 2)) > 1e-5).all()


def test_latent_slots_decode_with_the_cache_and_save(tokenizer_dir, tmp_path):
    codec = make_codec(tokenizer_dir, latent_slots=4, slot_tokens=3).eval()
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    ids = torch.full((3, 1), codec.bos_id)
    with torch.no_grad():
        for _ in range(14):  # past the last slot's tokens: positions 12.. read the last slot
            ids = torch.cat([ids, codec.decoder_logits(ids, torch.ones_like(ids), z)[:, -1:].argmax(-1)], dim=1)
    naive = [row[: row.index(codec.eos_id)] if codec.eos_id in row else row for row in ids[:, 1:].tolist()]
    assert codec.decode_ids(z, max_new_tokens=14) == naive
    model = DiLED(codec, MLPSkipNet(8, hidden=16, depth=1, time_dim=8), LatentDiffusion("linear", 50)).eval()
    loaded = DiLED.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.codec.latent_slots == 4 and loaded.codec.slot_tokens == 3
    torch.testing.assert_close(model.encode(SENTENCES[:3]), loaded.encode(SENTENCES[:3]))
    assert model.codec.decode(z) == loaded.codec.decode(z)


def test_bad_latent_slots_are_named(tokenizer_dir):
    with pytest.raises(ValueError, match="latent_slots must be >= 1 and divide latent_dim=8, got 3"):
        make_codec(tokenizer_dir, latent_slots=3)
    with pytest.raises(ValueError, match="slot_tokens must be an integer >= 1, got 0"):
        make_codec(tokenizer_dir, latent_slots=2, slot_tokens=0)
