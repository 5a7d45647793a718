"""hybridgrid.flows"""
