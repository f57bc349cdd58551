"""The dense engine (ConvexAdam's recipe on IMPACT feature maps): features computed once, a coarse
discrete search over a displacement window made smooth by coupled-convex optimisation, then Adam on a
displacement field; the result is elastix's DeformationFieldTransform.

``features`` (feature maps of both images on shared fixed-space axes), ``sampling`` (vector fields on
grids), ``costvolume`` (cost volume, coupled-convex, inverse consistency), ``adam`` (the fine stage),
``components`` (DenseRegistration and ConvexAdam with their keys), ``stage`` (one dense stage).
"""
