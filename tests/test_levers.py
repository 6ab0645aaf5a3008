"""The stability levers: EMA with warmup, learning-rate warmup and cosine decay, gradient clipping, dropout,
and the loss by schedule quarter."""

import copy

import pytest
import torch

from tiny import tiny_config, tiny_images, tiny_run, train


def test_ema_after_k_updates_is_the_closed_form_average(nb):
    model = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(model)
    start = ema.weight.detach().clone()
    history, decays = [], [0.5, 0.9, 0.99, 0.7]
    for decay in decays:
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        history.append(model.weight.detach().clone())
        nb.update_ema(ema, model, decay)
    # theta_EMA after k updates = prod(d) theta_0 + sum_i (1 - d_i) prod_{j > i} d_j theta_i
    expected = torch.tensor(decays).prod() * start
    for i, weights in enumerate(history):
        expected += (1 - decays[i]) * torch.tensor(decays[i + 1 :]).prod() * weights
    torch.testing.assert_close(ema.weight, expected)


def test_ema_copies_buffers_instead_of_averaging_them(nb):
    model, ema = torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    model.running_mean.fill_(3.0)
    nb.update_ema(ema, model, 0.9999)
    assert torch.equal(ema.running_mean, model.running_mean)


def test_the_ema_decay_grows_with_the_run_as_a_power_function(nb):
    assert nb.ema_decay(0, 0.9999) == 0  # the first update copies the weights
    for n in (100, 1000, 10_000):  # (1 - 1/n)^(gamma + 1), gamma = 16.97: 0.835, 0.982, 0.9982
        assert nb.ema_decay(n - 1, 0.9999) == pytest.approx((1 - 1 / n) ** 17.97)
    assert nb.ema_decay(10**6, 0.9999) == 0.9999
    decays = [nb.ema_decay(n, 0.9999) for n in range(1000)]
    assert decays == sorted(decays)


def test_the_ema_trails_a_moving_weight_by_the_same_fraction_of_any_run(nb):
    """A weight that grows by 1 each update: a power-function EMA lags it by n / (gamma + 2), 5% of the run,
    after 1,000 updates as after 10,000 (a fixed decay would lag by 1 / (1 - decay) at any length)."""
    model, ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    lags = {}
    for update in range(10_000):
        with torch.no_grad():
            model.weight.fill_(update + 1.0)
        nb.update_ema(ema, model, nb.ema_decay(update, 0.9999))
        if update + 1 in (1000, 10_000):
            lags[update + 1] = (update + 1 - ema.weight.item()) / (update + 1)
    assert lags[1000] == pytest.approx(1 / 18.97, rel=0.02) and lags[10_000] == pytest.approx(1 / 18.97, rel=0.02)


def test_training_keeps_the_ema_that_its_decays_say(nb, tmp_path, monkeypatch):
    """With the decay of update n (1-based) set to 1 - 1/n, the EMA after each update is the plain mean of the weights
    after every update so far: training must blend each update's weights into it with exactly that decay."""
    monkeypatch.setattr(nb, "ema_decay", lambda update, max_decay: 1 - 1 / (update + 1))
    config = tiny_config(nb, tmp_path, EPOCHS=2)
    run = tiny_run(nb, config)
    history, step = [], run.optimizer.step
    run.optimizer.step = lambda: (step(), history.append(copy.deepcopy(run.model.state_dict())))
    train(nb, config, tiny_images(), run, tmp_path / "run")
    assert len(history) == 6
    for name, ema in run.ema.named_parameters():
        mean = torch.stack([weights[name] for weights in history]).mean(dim=0)
        torch.testing.assert_close(ema, mean, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(ema, history[-1][name]), name  # the EMA lags the weights it averages


def test_no_ema_when_ema_decay_is_none(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1, EMA_DECAY=None)
    run = tiny_run(nb, config)
    assert run.ema is None
    train(nb, config, tiny_images(), run, tmp_path / "run")
    assert nb.load_checkpoint(tmp_path / "run" / "step_00000003.pt")["ema"] is None


def test_learning_rate_warms_up_linearly_then_follows_a_cosine(nb):
    rates = [nb.get_lr(update, 1.0, warmup_steps=4, total_updates=20, cosine=True) for update in range(21)]
    assert rates[:4] == pytest.approx([0.25 * 0.5 * (1 + torch.cos(torch.tensor(n * torch.pi / 20)).item()) * (n + 1)
                                       for n in range(4)])
    assert rates[10] == pytest.approx(0.5) and rates[20] == pytest.approx(0.0, abs=1e-12)


def test_learning_rate_is_constant_after_warmup_without_cosine(nb):
    assert [nb.get_lr(update, 2e-4, warmup_steps=0, total_updates=5, cosine=False) for update in range(8)] == [2e-4] * 8



@pytest.mark.parametrize("grad_clip", [1e-3, float("inf")])
def test_gradient_norm_is_clipped(nb, tmp_path, grad_clip, monkeypatch):
    monkeypatch.setattr(nb, "GRAD_CLIP", grad_clip)
    config = tiny_config(nb, tmp_path)
    run = tiny_run(nb, config)
    order, flips = nb.epoch_order(24, config.seed, 0)
    nb.train_update(run.state, tiny_images(), order, flips, run.schedule, config, torch.device("cpu"), run.progress)
    norm = torch.cat([p.grad.flatten() for p in run.model.parameters() if p.grad is not None]).norm().item()
    assert (norm <= 1e-3 * 1.001) == (grad_clip == 1e-3)


def test_dropout_is_active_in_training_only(nb):
    model = nb.UNet(base_channels=16, channel_mults=(1, 2), dropout=0.5)
    torch.nn.init.normal_(model.output[-1].weight, std=0.1)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 5])
    assert not torch.equal(model.train()(x, t), model(x, t))
    with torch.no_grad():
        assert torch.equal(model.eval()(x, t), model(x, t))


def test_loss_is_recorded_per_quarter_of_the_schedule(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1, TIMESTEPS=8, BATCH_SIZE=8)
    run = tiny_run(nb, config)
    seen = []
    real_losses = nb.diffusion_losses

    def recording_losses(*args):
        losses, t = real_losses(*args)
        seen.append((losses.detach(), t))
        return losses, t

    nb_patch = pytest.MonkeyPatch()
    nb_patch.setattr(nb, "diffusion_losses", recording_losses)
    try:
        train(nb, config, tiny_images(), run, tmp_path / "run")
    finally:
        nb_patch.undo()
    assert len(run.progress["quarter_losses"]) == len(run.progress["losses"]) == 3
    for (losses, t), row in zip(seen, run.progress["quarter_losses"], strict=True):
        for quarter in range(4):
            chosen = losses[t // 2 == quarter]  # T = 8: t 0-1 is quarter 1, ..., t 6-7 quarter 4
            if len(chosen):
                assert row[quarter] == pytest.approx(chosen.mean().item(), rel=1e-5)
            else:
                assert row[quarter] is None


def test_bf16_autocast_trains_close_to_float32(nb, tmp_path):
    losses = {}
    for precision in (None, "bf16"):
        config = tiny_config(nb, tmp_path / str(precision), EPOCHS=1, MIXED_PRECISION=precision)
        run = tiny_run(nb, config)
        train(nb, config, tiny_images(), run, tmp_path / str(precision) / "run")
        losses[precision] = run.progress["losses"]
        assert all(p.dtype == torch.float32 for p in run.model.parameters())  # weights stay float32
    assert losses[None] != losses["bf16"]  # autocast really ran in bfloat16
    assert losses["bf16"] == pytest.approx(losses[None], rel=0.05)


def test_the_fused_optimizer_takes_adams_step_with_beta2_0_99(nb):
    # Gradients that shrink over 20 updates, as early in training, where beta2 matters: fused Adam matches plain
    # Adam with betas (0.9, 0.99) exactly, and is 3e-5 away from torch's default 0.999 (the lr is 2e-4).
    torch.manual_seed(1)
    layer = torch.nn.Linear(8, 8)
    reference = copy.deepcopy(layer)
    fused = nb.make_optimizer(layer, 2e-4)
    plain = torch.optim.Adam(reference.parameters(), lr=2e-4, betas=(0.9, 0.99), foreach=False)
    generator = torch.Generator().manual_seed(0)
    for update in range(20):
        x = torch.randn(4, 8, generator=generator)
        for model, optimizer in ((layer, fused), (reference, plain)):
            optimizer.zero_grad()
            (model(x).square().mean() / (update + 1)).backward()
            optimizer.step()
    for a, b in zip(layer.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("batch_size, accumulate, micro", [(64, 1, 16), (32, 2, None), (16, 4, 8)])
def test_micro_batches_and_accumulation_give_the_whole_batchs_update(nb, tmp_path, monkeypatch, batch_size,
                                                                       accumulate, micro):
    """One batch of 64 against the same 64 images as micro-batches or accumulated batches: the same gradient and
    the same update, to float tolerance. Each image's t and noise are fixed by the image itself here, so every
    split draws the same examples (the notebook draws them per batch from the RNG)."""

    def losses_fixed_by_image(model, x_0, schedule, labels=None, prediction="eps", min_snr_gamma=None):
        key = (x_0.sum(dim=(1, 2, 3)) * 997).abs()
        t = key.long() % schedule.num_timesteps
        noise = torch.sin(x_0 * 31 + key.view(-1, 1, 1, 1))
        prediction = model(nb.forward_diffusion(x_0, t, noise, schedule), t)
        return (prediction.float() - noise).square().mean(dim=(1, 2, 3)), t

    monkeypatch.setattr(nb, "diffusion_losses", losses_fixed_by_image)
    images = tiny_images(64)
    order, flips = torch.arange(64), torch.zeros(64, dtype=torch.bool)
    results = []
    for size, steps, pieces in ((64, 1, None), (batch_size, accumulate, micro)):
        monkeypatch.setattr(nb, "CPU_MICRO_BATCH", pieces or size)
        config = tiny_config(nb, tmp_path, BATCH_SIZE=size, GRAD_ACCUM_STEPS=steps, EMA_DECAY=None,
                             MAX_BATCHES_PER_EPOCH=None)
        run = tiny_run(nb, config)
        torch.nn.init.normal_(run.model.output[-1].weight, std=0.1)  # gradients reach every layer
        stats = nb.train_update(run.state, images, order, flips, run.schedule, config, torch.device("cpu"),
                                run.progress)
        results.append((stats[0].item(), [p.grad.clone() for p in run.model.parameters()],
                        [p.detach().clone() for p in run.model.parameters()]))
    (loss, grads, weights), (other_loss, other_grads, other_weights) = results
    assert other_loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(grads, other_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    # Adam's first step moves each weight by lr * g / (|g| + eps), about lr = 1e-4: the same to within 5% of a step
    # wherever the gradient is well above the float rounding the comparison above allows (1e-7; how it rounds
    # depends on the thread count), and by at most one step where it is not
    for a, b, gradient in zip(weights, other_weights, grads, strict=True):
        clear = gradient.abs() > 1e-5
        torch.testing.assert_close(b[clear], a[clear], rtol=0, atol=5e-6)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


def test_use_compile_trains_the_compiled_unet_as_eager_does_on_the_cpu(nb, tmp_path, monkeypatch):
    """USE_COMPILE = True on the CPU: train() runs torch.compile's Inductor (about a minute to compile here, hence
    one epoch of three updates), and the losses and weights match the eager run's to float tolerance."""
    calls, real_compile, results = [], torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or real_compile(model, **kw))
    for use_compile in (False, True):
        config = tiny_config(nb, tmp_path / str(use_compile), EPOCHS=1, USE_COMPILE=use_compile, EMA_DECAY=None)
        run = tiny_run(nb, config)
        train(nb, config, tiny_images(), run, tmp_path / str(use_compile) / "run")
        results.append((list(calls), run.progress["losses"], run.model.state_dict()))
        calls.clear()
    (eager_calls, eager_losses, eager), (compiled_calls, compiled_losses, compiled_weights) = results
    assert eager_calls == [] and compiled_calls == [{"mode": "default"}]
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for name, weights in eager.items():
        torch.testing.assert_close(compiled_weights[name], weights, rtol=1e-4, atol=1e-5)
