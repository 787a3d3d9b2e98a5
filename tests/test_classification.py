"""The classifier: LoRA on Q and V starts at zero, eq. 4's weighting, selection on val, test read once."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadream_lib import classification, methods, models


def test_fresh_clip_lora_leaves_logits_unchanged_and_targets_q_v_of_both_towers(make_params, demo_run):
    p, run, split = demo_run()
    clip, tokenizer, size = models.load_clip(p)
    head = classification.CLIPClassifier(clip, tokenizer, split.classifier_prompts()).eval()
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        before = head(images)
    trainable = classification.add_clip_lora(clip, p.clf_lora_rank, p.clf_lora_alpha, p.clf_lora_dropout)
    head.eval()
    with torch.no_grad():
        after = head(images)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    wrapped = [m for m in clip.modules() if isinstance(m, classification.LoRAMultiheadAttention)]
    n_blocks = len(clip.visual.transformer.resblocks) + len(clip.transformer.resblocks)
    assert len(wrapped) == n_blocks and len(trainable) == 4 * n_blocks
    assert all(q.requires_grad for q in trainable)
    assert not clip.logit_scale.requires_grad
    assert sum(q.requires_grad for q in clip.parameters()) == len(trainable)


def test_lora_attention_matches_torch_mha_with_masks():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    lora = classification.LoRAMultiheadAttention(mha, rank=4, alpha=8, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    for mask in (None, causal, causal.isinf()):
        torch.testing.assert_close(lora(x, x, x, attn_mask=mask)[0], mha(x, x, x, attn_mask=mask, need_weights=False)[0],
                                   rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        lora.lora_B_q.normal_()
    assert not torch.allclose(lora(x, x, x)[0], mha(x, x, x, need_weights=False)[0])


def test_q_and_v_share_one_dropout_mask_as_the_authors_merged_linear():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=False)
    lora = classification.LoRAMultiheadAttention(mha, rank=4, alpha=8, dropout=0.5).train()
    with torch.no_grad():
        lora.lora_B_q.normal_()
        lora.lora_B_v.normal_()
    masks = []
    hook = lora.dropout.register_forward_hook(lambda module, args, out: masks.append(out))
    x = torch.randn(5, 2, 16)
    lora(x, x, x)
    hook.remove()
    assert len(masks) == 1  # one mask for Q and V
    # and it is the mask both branches use: the same result as one dropout applied by hand
    torch.manual_seed(1)
    got = lora(x, x, x)[0]
    torch.manual_seed(1)
    dropped = lora.dropout(x.transpose(0, 1))
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    xt = x.transpose(0, 1)
    q = F.linear(xt, w_q, b_q) + dropped @ lora.lora_A_q.t() @ lora.lora_B_q.t() * lora.scale
    k = F.linear(xt, w_k, b_k)
    v = F.linear(xt, w_v, b_v) + dropped @ lora.lora_A_v.t() @ lora.lora_B_v.t() * lora.scale
    heads = lambda t: t.reshape(2, 5, 4, 4).transpose(1, 2)
    want = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(got, mha.out_proj(want).transpose(0, 1))


def test_pooled_loss_is_eq_4_with_the_authors_per_sample_mask():
    torch.manual_seed(0)
    logits, labels = torch.randn(10, 3), torch.tensor([0, 1, 2, 0, 2, 2, 1, 0, 1, 2])
    is_real = torch.tensor([True, False, True, False, False, True, False, False, True, False])
    got = classification.pooled_loss(logits, labels, is_real, 0.8)
    want = 0.8 * F.cross_entropy(logits[is_real], labels[is_real]) + 0.2 * F.cross_entropy(logits[~is_real], labels[~is_real])
    torch.testing.assert_close(got, want)
    soft = F.one_hot(labels, 3).float()  # soft targets (CutMix / MixUp) give the same loss when one-hot
    torch.testing.assert_close(classification.pooled_loss(logits, soft, is_real, 0.8), want)
    # one source only (real_weight 1 or 0): plain cross-entropy
    everything = torch.ones(10, dtype=torch.bool)
    torch.testing.assert_close(classification.pooled_loss(logits, labels, everything, 1.0), F.cross_entropy(logits, labels))
    torch.testing.assert_close(classification.pooled_loss(logits, labels, ~everything, 0.0), F.cross_entropy(logits, labels))


def test_a_batch_without_real_or_synthetic_samples_still_gives_the_right_loss():
    """The authors' mask takes the mean of an empty set (NaN); the absent source adds nothing."""
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    no_real = torch.zeros(6, dtype=torch.bool)
    got = classification.pooled_loss(logits, labels, no_real, 0.8)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, 0.2 * F.cross_entropy(logits, labels))
    torch.testing.assert_close(classification.pooled_loss(logits, labels, ~no_real, 0.8), 0.8 * F.cross_entropy(logits, labels))


def test_warmup_is_the_authors_linspace_then_cosine_to_min_lr():
    f = classification.lr_lambda(total_steps=100, warmup_steps=10, base_lr=1e-4, min_lr=1e-8)
    np.testing.assert_allclose([1e-4 * f(s) for s in range(10)], np.linspace(1e-8, 1e-4, 10), rtol=1e-12)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(1e-4)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_selection_on_val_and_the_test_split_read_exactly_once(demo_run, monkeypatch):
    p, run, split = demo_run(clf_epochs=3, clf_warmup_epochs=1)
    reads = {}
    real_load = classification.load_rgb

    def counting(path):
        reads[path] = reads.get(path, 0) + 1
        return real_load(path)

    monkeypatch.setattr(classification, "load_rgb", counting)
    metrics = classification.train_and_evaluate(p, "real_finetune", split, [], progress=False)
    test_paths = {path for path, _ in split.test}
    assert all(reads.get(path) == 1 for path in test_paths)  # the test split: once, at the end
    assert all(reads.get(path) == p.clf_epochs for path, _ in split.val)  # val: once per epoch
    val_curve = [h["val_top1"] for h in metrics["history"]]
    assert metrics["best_epoch"] == int(np.argmax(val_curve)) + 1
    assert metrics["val_top1"] == max(val_curve)
    assert metrics["selected_on"] == "val" and metrics["test_evaluations"] == 1
    assert set(metrics["per_class"]) == set(split.classnames)


def test_selected_weights_are_the_best_val_epoch(demo_run, monkeypatch):
    p, run, split = demo_run(clf_epochs=3, clf_warmup_epochs=1)
    val_scores = iter([50.0, 90.0, 10.0])  # epoch 2 is the best on val
    states = []
    real_predict, real_state = classification.predict, classification.CLIPClassifier.lora_state

    def fake_val(model, loader, device, amp):
        preds, labels = real_predict(model, loader, device, amp)
        if len(labels) == len(split.val) and len(states) < 3:
            score = next(val_scores)
            n = int(round(score / 100 * len(labels)))
            preds = np.where(np.arange(len(labels)) < n, labels, (labels + 1) % 4)
            states.append(real_state(model))
        return preds, labels

    monkeypatch.setattr(classification, "predict", fake_val)
    captured = {}
    real_fit = classification.fit

    def fit_and_capture(model, *args, **kwargs):
        out = real_fit(model, *args, **kwargs)
        captured["final"] = real_state(model)
        return out

    monkeypatch.setattr(classification, "fit", fit_and_capture)
    metrics = classification.train_and_evaluate(p, "real_finetune", split, [], progress=False)
    assert metrics["best_epoch"] == 2
    for key, value in captured["final"].items():
        torch.testing.assert_close(value, states[1][key])
    assert any(not torch.equal(captured["final"][k], states[2][k]) for k in captured["final"])


def test_classifier_learns_the_toy_data(demo_run):
    p, run, split = demo_run(clf_epochs=15, clf_warmup_epochs=1, clf_lr=3e-3, mix_aug_prob=0.0, shots=16,
                             images_per_class=32, ablation_images_per_class=[8])
    metrics = classification.train_and_evaluate(p, "real_finetune", split, [], progress=False)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])  # chance level is ln 4 = 1.39
    assert metrics["top1"] >= 50.0  # 4 classes: chance is 25 %


def test_synthetic_settings_need_synthetic_images(demo_run):
    from datadream_lib.errors import DataDreamError

    p, run, split = demo_run()
    with pytest.raises(DataDreamError, match="needs synthetic images"):
        classification.train_and_evaluate(p, "synthetic", split, [], progress=False)


def _pool_run(demo_run, **overrides):
    """A run and a stand-in synthetic pool (train images of the toy data; the pipeline test uses real ones)."""
    p, run, split = demo_run(clf_epochs=1, clf_warmup_epochs=0, **overrides)
    synth = split.train[: 4 * p.images_per_class]
    return p, split, synth


def test_synthetic_plus_real_takes_the_authors_steps_per_epoch(demo_run, monkeypatch):
    """One pooled dataset of synthetic images and repeated real shots, batch clf_batch_size:
    ceil((n_synthetic + n_real * repeat) / batch) steps per epoch (not the synthetic loader's count)."""
    p, split, synth = _pool_run(demo_run, clf_batch_size=8, images_per_class=8, shots=4)
    steps = {}
    real_fit = classification.fit

    def counting_fit(*args, **kwargs):
        history, best = real_fit(*args, **kwargs)
        steps["per_epoch"] = [h["steps"] for h in history]
        return history, best

    monkeypatch.setattr(classification, "fit", counting_fit)
    metrics = classification.train_and_evaluate(p, "synthetic_real", split, synth, progress=False)
    repeat = p.images_per_class // p.shots
    n_real = len(split.shots(p.shots))
    expected = -(-(len(synth) + n_real * repeat) // p.clf_batch_size)
    assert steps["per_epoch"] == [expected] * p.clf_epochs
    assert len(metrics["history"][0]["losses"]) == expected
    assert expected != -(-len(synth) // p.clf_batch_size)  # what the side-by-side loaders used to take


def test_batches_of_the_pool_mix_real_and_synthetic_samples_with_the_mask(demo_run):
    p, split, synth = _pool_run(demo_run, images_per_class=8, shots=4)
    pool = classification.TrainingPool(split.shots(p.shots), synth, repeat=2)
    assert len(pool) == len(synth) + 2 * len(split.shots(p.shots))
    flags = [pool.items[i][2] is not None for i in range(len(pool))]  # a real sample names its shot
    assert sum(flags) == 2 * len(split.shots(p.shots))
    image, label, is_real = pool[len(pool) - 1]
    assert is_real is True and image.dtype == torch.uint8 and image.shape[0] == 3  # decoded only: augmented on the device


def test_mixing_is_off_by_default_and_one_coin_per_step():
    from datadream_lib import params

    assert params.Params().mix_aug_prob == 0.0  # the authors' released scripts: is_mix_aug=False
    images, labels = torch.randn(8, 3, 8, 8), torch.tensor([0, 0, 1, 2, 3, 2, 3, 2])
    is_real = torch.tensor([True] * 3 + [False] * 5)  # real: classes 0, 1; synthetic: 2, 3
    off = classification.BatchMix(4, 0.0, seed=0)
    out, targets = off(images, labels, is_real)
    assert torch.equal(out, images) and torch.equal(targets, F.one_hot(labels, 4).float())
    mixer = classification.BatchMix(4, 0.5, seed=0)
    coins = np.random.default_rng(0).random(20) < 0.5  # the same seeded coins, one per call
    for heads in coins:
        out, targets = mixer(images, labels, is_real)
        assert torch.equal(out, images) != heads
        # real and synthetic samples are mixed among themselves only: no label mass crosses the mask
        assert targets[is_real][:, 2:].sum() == 0 and targets[~is_real][:, :2].sum() == 0
        torch.testing.assert_close(targets.sum(-1), torch.ones(8))


def test_logits_are_fp32_under_bf16_autocast(make_params, demo_run):
    p, run, split = demo_run()
    clip, tokenizer, size = models.load_clip(p)
    head = classification.CLIPClassifier(clip, tokenizer, split.classifier_prompts()).eval()
    images = torch.randn(4, 3, size, size)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(images)
        image = clip.encode_image(images)
        text = head.text_features()
    assert logits.dtype == torch.float32
    want = clip.logit_scale.exp() * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()
    torch.testing.assert_close(logits, want, rtol=1e-6, atol=1e-6)  # the product itself is never rounded to bf16


def test_teacher_loss_pulls_the_student_towards_the_zero_shot_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(6, 5)
    student = teacher.clone().requires_grad_(True)
    synthetic = torch.tensor([True, True, False, True, False, True])
    classification.teacher_loss(student, teacher, synthetic, 2.0).backward()
    assert student.grad.abs().max() < 1e-7  # a student equal to its teacher is at the optimum
    other = torch.randn(6, 5, requires_grad=True)
    loss = classification.teacher_loss(other, teacher, synthetic, 2.0)
    target = F.softmax(teacher[synthetic] / 2, -1)
    assert loss.item() == pytest.approx(-(target * F.log_softmax(other[synthetic] / 2, -1)).sum(-1).mean().item())
    loss.backward()
    assert (other.grad[~synthetic] == 0).all()  # only the synthetic samples have a teacher
    assert classification.teacher_loss(other, teacher, torch.zeros(6, dtype=torch.bool), 2.0).item() == 0


def test_the_teacher_option_is_off_by_default_and_changes_training_when_on(demo_run):
    p, run, split = demo_run(clf_epochs=1)
    fake_synthetic = split.shots(p.shots)  # any labelled images will do for the loss
    off = classification.train_and_evaluate(p, "synthetic", split, fake_synthetic, progress=False)
    issynth = p.replace(synth_method="issynth", clf_teacher_weight=0.5)
    options = methods.METHODS["issynth"].classifier_options(issynth)  # IsSynth's own option, as classify asks for it
    assert options == methods.ClassifierOptions(teacher_weight=0.5, teacher_temperature=2.0)
    assert methods.METHODS["issynth"].classifier_options(p.replace(synth_method="issynth")).teacher_weight == 0
    on = classification.train_and_evaluate(p, "synthetic", split, fake_synthetic, progress=False, options=options)
    assert off["teacher_weight"] == 0 and on["teacher_weight"] == 0.5
    assert on["history"][0]["losses"][0] > off["history"][0]["losses"][0]  # the same first batch, a term added


def test_scores_do_not_depend_on_an_extra_pass_over_the_loader(demo_run, monkeypatch):
    """tqdm.auto in a kernel (through tqdm.asyncio) calls iter() on what it wraps once more than the
    loop does. With the DataLoader's own shuffle each iter() drew from one generator, so every later
    epoch's order, and the scores, changed with the progress bar imported; the order is now a
    function of (seed, epoch) alone."""
    from torch.utils.data import DataLoader

    p, run, split = demo_run(clf_epochs=3, clf_warmup_epochs=0, clf_batch_size=8, images_per_class=8, shots=4)
    synth = split.train[: 4 * p.images_per_class]
    plain = classification.train_and_evaluate(p, "synthetic_real", split, synth, progress=False)
    real_iter = DataLoader.__iter__

    def eager(self):  # what tqdm.asyncio's __init__ does before the loop's own iter()
        real_iter(self)
        return real_iter(self)

    monkeypatch.setattr(DataLoader, "__iter__", eager)
    wrapped = classification.train_and_evaluate(p, "synthetic_real", split, synth, progress=False)
    assert [h["losses"] for h in wrapped["history"]] == [h["losses"] for h in plain["history"]]
    order = classification.EpochShuffle(40, seed=1)
    epochs = []
    for epoch in (1, 2, 1):
        order.epoch = epoch
        epochs.append(list(order))
    assert epochs[0] == epochs[2] != epochs[1] and sorted(epochs[1]) == list(range(40))
