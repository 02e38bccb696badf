"""Lion (Chen et al. 2023), a study file's own optimizer: ``optimizers."./lion.py:Lion"`` in a study file.

adamscape reads its hyperparameters from the constructor: ``lr`` and ``weight_decay`` and, from the tuple
``betas``, ``beta1`` and ``beta2``; the class attribute ``hyperparameters`` declares their domains.
This file imports torch only, so it runs wherever adamscape's workers do.
"""

import torch


class Lion(torch.optim.Optimizer):
    r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2), decoupled weight decay.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)}, \theta_0 \text{ (params)},
                \lambda \text{ (weight decay)} \\
            &\textbf{initialize}: m_0 \leftarrow 0 \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do} \\
            &\hspace{5mm} g_t \leftarrow \nabla_\theta f_t(\theta_{t-1}) \\
            &\hspace{5mm} c_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\hspace{5mm} \theta_t \leftarrow \theta_{t-1} - \gamma \big(\mathrm{sign}(c_t) + \lambda \theta_{t-1}\big)
                = \theta_{t-1} (1 - \gamma\lambda) - \gamma\, \mathrm{sign}(c_t) \\
            &\hspace{5mm} m_t \leftarrow \beta_2 m_{t-1} + (1 - \beta_2) g_t \\
            &\textbf{return}\: \theta_t
        \end{aligned}

    ``sign(0) = 0``. The state per parameter is ``exp_avg`` (:math:`m`). The update has the same size
    in every coordinate, so Lion's lr is typically 3-10x smaller than AdamW's and its weight decay
    3-10x larger (the paper's advice), which is what a sensitivity study can show.

    Args:
        params: parameters to optimize, or dicts defining parameter groups.
        lr: learning rate :math:`\gamma` (default 1e-4).
        betas: :math:`(\beta_1, \beta_2)`, the interpolation for the update and the momentum's decay
            (default (0.9, 0.99)).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
    """

    hyperparameters = {"lr": {"low": 0.0, "open_low": True, "log": True, "search": (1e-6, 1e-2)},
                       "beta1": {"low": 0.0, "high": 1.0}, "beta2": {"low": 0.0, "high": 1.0},
                       "weight_decay": {"low": 0.0, "search": (1e-4, 1.0)}}

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("Lion does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg = state["exp_avg"]

                c = exp_avg.mul(beta1).add_(grad, alpha=1 - beta1)   # c_t = β1·m + (1 − β1)·g
                p.mul_(1 - lr * weight_decay)                        # θ ← θ·(1 − lr·λ) …
                p.add_(c.sign_(), alpha=-lr)                         # … − lr·sign(c_t)
                exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)      # m_t = β2·m + (1 − β2)·g
        return loss
