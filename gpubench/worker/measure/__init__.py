"""How a case's measured steps are taken apart: when to stop measuring (``precision``) and
where each step's time goes (``phases``)."""
