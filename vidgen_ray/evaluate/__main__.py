"""``python -m vidgen_ray.evaluate``: are the shipped reference weights installed and intact?"""

from vidgen_ray.evaluate.weights import main

main()
