"""Multinomial logistic regression on scikit-learn's digits, trained with NumPy and the fused
``numba_lse.cross_entropy(..., return_grad=True)``.

The data set ships inside scikit-learn (1797 8x8 images, 10 classes): nothing is downloaded.
Full-batch gradient descent with momentum on softmax(X W + b); the loss and its gradient with
respect to the logits come from one call, and the chain rule to W and b is two matrix
products.

Run: python examples/digits_logistic_regression.py   (writes examples/digits_loss.png)
"""

import argparse
import pathlib

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import numba_lse as nl


def load(seed=0):
    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    return x_train, x_test, y_train, y_test


def train(x, y, n_classes=10, steps=300, learning_rate=0.5, momentum=0.9, l2=1e-4, seed=0):
    """Weights (W, b) and the loss after each step."""
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=0.01, size=(x.shape[1], n_classes))
    b = np.zeros(n_classes)
    velocity_w = np.zeros_like(w)
    velocity_b = np.zeros_like(b)
    losses = []
    for _ in range(steps):
        logits = x @ w + b
        loss, grad_logits = nl.cross_entropy(logits, y, return_grad=True)
        losses.append(float(loss) + 0.5 * l2 * float(np.sum(w * w)))
        grad_w = x.T @ grad_logits + l2 * w
        grad_b = grad_logits.sum(axis=0)
        velocity_w = momentum * velocity_w - learning_rate * grad_w
        velocity_b = momentum * velocity_b - learning_rate * grad_b
        w += velocity_w
        b += velocity_b
    return w, b, losses


def accuracy(x, y, w, b):
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    x_train, x_test, y_train, y_test = load()
    w, b, losses = train(x_train, y_train, steps=args.steps)
    print(f"steps: {args.steps}  final training loss: {losses[-1]:.4f}")
    print(f"train accuracy: {accuracy(x_train, y_train, w, b):.4f}")
    print(f"test accuracy:  {accuracy(x_test, y_test, w, b):.4f}")
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        ax.plot(losses)
        ax.set_yscale("log")
        ax.set_xlabel("gradient step (full batch)")
        ax.set_ylabel("training loss (cross-entropy + L2)")
        ax.set_title("Logistic regression on digits with nl.cross_entropy(return_grad=True)")
        fig.tight_layout()
        path = pathlib.Path(__file__).with_name("digits_loss.png")
        fig.savefig(path, dpi=110)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
