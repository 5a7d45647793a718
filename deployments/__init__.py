"""hybridgrid.deployments"""
