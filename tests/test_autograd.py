"""The autograd engine: graph walking, accumulation, no_grad, deep chains.

Expected gradients are derived by hand (or by central differences through
pycnn.gradcheck), never by the engine under test.
"""
import numpy as np
import pytest

import pycnn
from pycnn.tensor import Function


def t64(a, grad=True):
    return pycnn.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def test_tensor_defaults_and_properties():
    x = pycnn.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert x.dtype == np.float32 and x.device == "cpu" and x.shape == (2, 2)
    assert not x.requires_grad and x.grad is None
    assert pycnn.tensor(np.zeros(3)).dtype == np.float64  # NumPy arrays keep their dtype
    assert pycnn.tensor([1, 2]).dtype.kind == "i"
    assert pycnn.tensor(3.0).item() == 3.0
    with pytest.raises(TypeError, match="requires_grad"):
        pycnn.tensor([1, 2], requires_grad=True)
    with pytest.raises(ValueError, match="device"):
        pycnn.tensor([1.0], device="tpu")


def test_shared_subexpression():
    x = t64([1.0, -2.0, 3.0])
    y = x * x + x  # dy/dx = 2x + 1
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)


def test_reuse_in_two_branches():
    x = t64([0.5, 2.0])
    a = x * 2.0
    b = x * 3.0
    (a * b).sum().backward()  # d(6x^2)/dx = 12x
    np.testing.assert_allclose(x.grad.numpy(), 12 * x.numpy())


def test_diamond_graph_counts_each_path_once():
    x = t64([2.0])
    h = x * x           # one node used by two consumers
    y = h * 3.0 + h.exp()
    y.backward()
    v = 2.0
    np.testing.assert_allclose(x.grad.numpy(), [3 * 2 * v + np.exp(v * v) * 2 * v])


def test_accumulation_across_two_backward_calls():
    x = t64([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3.0 + 2 * x.numpy())
    x.zero_grad()
    assert x.grad is None


def test_no_grad_records_nothing():
    x = t64([1.0, 2.0])
    with pycnn.no_grad():
        y = x * 2.0
        assert not pycnn.is_grad_enabled()
    assert pycnn.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()

    @pycnn.no_grad()
    def f(a):
        return a * a
    assert not f(x).requires_grad


def test_deep_chain_has_no_recursion_limit():
    x = t64([1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-9)


def test_backward_grad_argument():
    x = t64([[1.0, 2.0], [3.0, 4.0]])
    y = x * 2.0
    with pytest.raises(ValueError, match="one-element"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))
    y.backward(pycnn.tensor(np.full((2, 2), 0.5)))
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, 2)))


def test_broadcasting_gradients_reduce_to_the_input_shape():
    a = t64(np.arange(6.0).reshape(2, 3))
    b = t64([10.0, 20.0, 30.0])
    ((a + b) * b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.broadcast_to(b.numpy(), (2, 3)))
    np.testing.assert_allclose(b.grad.numpy(), (a.numpy() + 2 * b.numpy()).sum(0))


def test_arithmetic_gradients_by_finite_differences():
    rng = np.random.default_rng(0)
    a = t64(rng.uniform(0.5, 2.0, (3, 4)))
    b = t64(rng.uniform(0.5, 2.0, (4, 2)))
    c = t64(rng.uniform(0.5, 2.0, (3, 4)))
    pycnn.gradcheck(lambda a, c: (a - c) / (a * c) + (-a) ** 2, [a, c])
    pycnn.gradcheck(lambda a, b: (a @ b).exp().log().mean(axis=0), [a, b])
    pycnn.gradcheck(lambda a: a.reshape(2, 6)[:, 1:4].sum(axis=1, keepdims=True), [a])
    pycnn.gradcheck(lambda a: a.flatten()[::2] * 3.0, [a])
    pycnn.gradcheck(lambda a: a.T @ a, [a])
    pycnn.gradcheck(lambda a: a[np.array([0, 0, 2])], [a])  # repeated rows accumulate
    pycnn.gradcheck(lambda a: 1.0 - 2.0 / a + 3.0 * a, [a])


def test_one_element_is_a_0d_tensor_with_a_gradient():
    # a[1, 2] is a scalar, as in NumPy and PyTorch (not shape (1,)), and backward works
    a = t64(np.arange(12.0).reshape(3, 4))
    e = a[1, 2]
    assert e.shape == ()
    (e * 3.0).backward()
    want = np.zeros((3, 4))
    want[1, 2] = 3.0
    np.testing.assert_array_equal(a.grad.numpy(), want)
    v = t64([1.0, 2.0, 3.0])
    v[np.int64(1)].backward()
    np.testing.assert_array_equal(v.grad.numpy(), [0.0, 1.0, 0.0])
    pycnn.gradcheck(lambda a: a[2, 3] * a[0, 1] + a[1, -1], [t64(np.arange(1.0, 13.0).reshape(3, 4))])


def test_a_tensor_inside_a_tuple_index_indexes_like_its_array():
    a = t64(np.arange(12.0).reshape(3, 4))
    rows = pycnn.tensor(np.array([0, 0, 2]))
    picked = a[rows, 1]
    np.testing.assert_array_equal(picked.numpy(), [1.0, 1.0, 9.0])
    picked.sum().backward()
    assert a.grad.numpy()[0, 1] == 2.0 and a.grad.numpy()[2, 1] == 1.0 and a.grad.numpy().sum() == 3.0


def test_detach_and_item():
    x = t64([3.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    assert d.item() == 6.0
    with pytest.raises(ValueError, match="one element"):
        t64([1.0, 2.0]).item()


def test_mixed_dtypes_are_refused():
    a = pycnn.tensor(np.ones(2, np.float32))
    b = pycnn.tensor(np.ones(2, np.float64))
    with pytest.raises(TypeError, match="dtype"):
        a + b


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(Function):
        name = "wrong_square"

        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return (g * self.x,)  # should be 2 * x * g

    x = t64([1.0, 2.0, 3.0])
    with pytest.raises(pycnn.GradcheckError, match=r"input 0 .* index \(0,\): analytic .*, numerical "):
        pycnn.gradcheck(lambda x: WrongSquare.apply(x), [x])


def test_gradcheck_refuses_float32():
    x = pycnn.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        pycnn.gradcheck(lambda x: x * x, [x])


def test_gradcheck_leaves_the_callers_tensors_alone():
    x = t64([1.0, 2.0])
    pycnn.gradcheck(lambda x: x * x, [x])
    assert x.grad is None
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])


def test_backward_releases_the_graph_unless_retained():
    x = t64([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()                                   # allowed: the first call kept the graph
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy())
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    z = x * 3.0
    z.sum().backward()
    assert not z.is_leaf and z.grad is None        # a released node is still no leaf


def test_leaf_gradients_are_separate_arrays():
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    (a + b).sum().backward()
    a.grad.data *= 0.5
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_pow_zero_has_zero_gradient_at_zero():
    x = t64([0.0, 2.0])
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])


def test_no_grad_decorator_survives_recursion():
    @pycnn.no_grad()
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(3) == 3
    assert pycnn.is_grad_enabled()
